// Tests of image-folder datasets: PNG and JPEG decoding (every colour type, exact or within a
// stated tolerance), torchvision's Resize + CenterCrop against hand-computed values, folder
// scanning and splits, decoding only the kept samples, unreadable files (errors name the file;
// skip_bad counts them), the disk cache (exact round trip, corrupt cache ignored), computed
// normalisation and bad options.
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <initializer_list>
#include <string>
#include <vector>

#include "quell/data.h"
#include "quell/image_folder.h"
#include "test_util.h"

namespace {

namespace fs = std::filesystem;
using quell::testing::ScratchDir;
using quell::testing::throws_with;


torch::Tensor random_u8(std::vector<int64_t> shape, uint64_t seed) {
  auto gen = at::detail::createCPUGenerator(seed);
  return torch::randint(0, 256, shape, gen, torch::kUInt8);
}

/// A smooth colour image [3, h, w] (gradients plus a low-frequency wave): JPEG keeps it close.
torch::Tensor smooth_rgb(int64_t h, int64_t w, double phase) {
  const auto y = torch::arange(h, torch::kDouble).view({h, 1}) / h;
  const auto x = torch::arange(w, torch::kDouble).view({1, w}) / w;
  const auto r = 40 + 170 * x + 0 * y;
  const auto g = 40 + 170 * y + 0 * x;
  const auto b = 128 + 60 * torch::sin(6.0 * x + 4.0 * y + phase);
  return torch::stack({r, g, b}).round().clamp(0, 255).to(torch::kUInt8);
}

/// ITU-R 601 luminance of [3, H, W] uint8, as the decoder computes it (16-bit fixed point).
torch::Tensor luma(const torch::Tensor& rgb) {
  const auto c = rgb.to(torch::kLong);
  return ((19595 * c[0] + 38470 * c[1] + 7471 * c[2] + 32768) / 65536)
      .to(torch::kUInt8)
      .unsqueeze(0);
}

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
}

/// An image folder root/<class>/<i>.png of n_per_class 6x6 PNGs per class; class k's images are
/// filled with value 40 * k + i plus a per-pixel pattern, so every image is distinct.
void write_png_folder(const fs::path& root, const std::vector<std::string>& classes,
                      int n_per_class, int64_t channels = 3) {
  for (size_t k = 0; k < classes.size(); ++k) {
    fs::create_directories(root / classes[k]);
    for (int i = 0; i < n_per_class; ++i) {
      auto img = random_u8({channels, 6, 6}, 100 + 31 * k + i);
      quell::write_png((root / classes[k] / (std::to_string(i) + ".png")).string(), img);
    }
  }
}

quell::DataOptions image_options(const std::string& dir, int64_t side = 6, int64_t channels = 3) {
  quell::DataOptions o;
  o.name = "images";
  o.dir = dir;
  o.channels = channels;
  o.height = side;
  o.width = side;
  return o;
}

/// Every test gets a fresh decoded-image cache directory and an empty memory cache.
class ImageFolder : public ::testing::Test {
 protected:
  void SetUp() override {
    cache_ = std::make_unique<ScratchDir>("imgcache");
    ::setenv("QUELL_CACHE_DIR", cache_->str().c_str(), 1);
    quell::clear_image_memory_cache();
  }
  void TearDown() override {
    ::unsetenv("QUELL_CACHE_DIR");
    quell::clear_image_memory_cache();
  }
  std::vector<fs::path> cache_files() const {
    std::vector<fs::path> files;
    for (const auto& e : fs::directory_iterator(cache_->str())) files.push_back(e.path());
    return files;
  }
  std::unique_ptr<ScratchDir> cache_;
};

// ---------------------------------------------------------------------------------------------
// Decoding

TEST(ImageDecode, PngOfEveryColourTypeDecodesToTheWrittenPixels) {
  ScratchDir dir;
  const auto rgb = random_u8({3, 5, 7}, 1);
  const auto gray = random_u8({1, 5, 7}, 2);
  const auto rgba = random_u8({4, 5, 7}, 3);
  const auto gray_alpha = random_u8({2, 5, 7}, 4);
  quell::write_png(dir.file("rgb.png"), rgb);
  quell::write_png(dir.file("gray.png"), gray);
  quell::write_png(dir.file("rgba.png"), rgba);
  quell::write_png(dir.file("ga.png"), gray_alpha);
  const auto decode = [&](const std::string& name, int64_t c) {
    return quell::decode_image_file(dir.file(name), c).pixels;
  };
  EXPECT_TRUE(decode("rgb.png", 3).equal(rgb));
  EXPECT_TRUE(decode("rgb.png", 1).equal(luma(rgb)));
  EXPECT_TRUE(decode("gray.png", 1).equal(gray));
  EXPECT_TRUE(decode("gray.png", 3).equal(gray.expand({3, 5, 7})));
  EXPECT_TRUE(decode("rgba.png", 3).equal(rgba.narrow(0, 0, 3))) << "alpha is dropped";
  EXPECT_TRUE(decode("ga.png", 1).equal(gray_alpha.narrow(0, 0, 1)));
  const auto d = quell::decode_image_file(dir.file("rgb.png"), 3);
  EXPECT_EQ(d.full_height, 5);
  EXPECT_EQ(d.full_width, 7);

  // Palette: at most 256 colours (here 4), stored as indices.
  auto pal = (random_u8({1, 5, 7}, 5).div(64, "floor") * 80).expand({3, 5, 7}).contiguous();
  pal[1].copy_(255 - pal[1]);
  quell::write_png(dir.file("palette.png"), pal, /*palette=*/true);
  EXPECT_TRUE(decode("palette.png", 3).equal(pal));

  // 16 bits: v = 257 * u maps to u exactly (v * 255 / 65535 = u); other values round to the
  // nearest 8-bit level.
  quell::write_png(dir.file("rgb16.png"), rgb.to(torch::kInt) * 257);
  EXPECT_TRUE(decode("rgb16.png", 3).equal(rgb));
  auto gen = at::detail::createCPUGenerator(6);
  const auto v16 = torch::randint(0, 65536, {1, 5, 7}, gen, torch::kInt);
  quell::write_png(dir.file("gray16.png"), v16);
  const auto expected = (v16.to(torch::kDouble) * 255.0 / 65535.0).round().to(torch::kUInt8);
  EXPECT_TRUE(decode("gray16.png", 1).equal(expected));
}

TEST(ImageDecode, JpegDecodesWithinToleranceOfTheWrittenPixels) {
  ScratchDir dir;
  const auto rgb = smooth_rgb(48, 64, 0.3);
  quell::write_jpeg(dir.file("a.jpg"), rgb, /*quality=*/95);
  const auto d = quell::decode_image_file(dir.file("a.jpg"), 3);
  ASSERT_EQ(d.pixels.sizes(), rgb.sizes());
  // Quality 95 with 4:2:0 chroma subsampling on smooth content: a mean error of a level or two
  // and no pixel off by more than a few levels.
  const auto err = (d.pixels.to(torch::kInt) - rgb.to(torch::kInt)).abs().to(torch::kDouble);
  EXPECT_LT(err.mean().item<double>(), 2.0);
  EXPECT_LE(err.max().item<double>(), 12.0);
  // Luminance straight from the JPEG's Y plane.
  const auto y = quell::decode_image_file(dir.file("a.jpg"), 1).pixels;
  const auto y_err = (y.to(torch::kInt) - luma(rgb).to(torch::kInt)).abs().to(torch::kDouble);
  EXPECT_LT(y_err.mean().item<double>(), 2.0);
  // Gray JPEG to RGB: the gray replicated.
  const auto gray = luma(rgb);
  quell::write_jpeg(dir.file("g.jpg"), gray, 95);
  const auto g3 = quell::decode_image_file(dir.file("g.jpg"), 3).pixels;
  EXPECT_TRUE(g3[0].equal(g3[1]) && g3[1].equal(g3[2]));
  EXPECT_LT((g3[0].to(torch::kInt) - gray[0].to(torch::kInt))
                .abs()
                .to(torch::kDouble)
                .mean()
                .item<double>(),
            2.0);
}

TEST(ImageDecode, JpegDctScalingTakesTheSmallestScaleReachingTheTarget) {
  ScratchDir dir;
  quell::write_jpeg(dir.file("a.jpg"), smooth_rgb(48, 64, 0.0), 90);
  // Shorter side 48: 2/8 gives 12 >= 12; 3/8 gives 18 >= 13.
  auto d = quell::decode_image_file(dir.file("a.jpg"), 3, /*min_short_side=*/12);
  EXPECT_EQ(d.pixels.sizes(), (std::vector<int64_t>{3, 12, 16}));
  EXPECT_EQ(d.full_height, 48);
  EXPECT_EQ(d.full_width, 64);
  d = quell::decode_image_file(dir.file("a.jpg"), 3, 13);
  EXPECT_EQ(d.pixels.sizes(), (std::vector<int64_t>{3, 18, 24}));
  d = quell::decode_image_file(dir.file("a.jpg"), 3, 100);  // larger than the image: full size
  EXPECT_EQ(d.pixels.sizes(), (std::vector<int64_t>{3, 48, 64}));
}

TEST(ImageDecode, FormatIsToldByMagicBytesNotTheName) {
  ScratchDir dir;
  const auto rgb = random_u8({3, 4, 4}, 7);
  quell::write_png(dir.file("really_a_png.jpg"), rgb);
  EXPECT_TRUE(quell::decode_image_file(dir.file("really_a_png.jpg"), 3).pixels.equal(rgb));
  write_bytes(dir.file("anim.png"), "GIF89a....");
  EXPECT_TRUE(throws_with([&] { quell::decode_image_file(dir.file("anim.png"), 3); },
                          {dir.file("anim.png") + ": not a JPEG or PNG image (a GIF image)"}));
}

TEST(ImageDecode, UnreadableFilesAreErrorsNamingTheFile) {
  ScratchDir dir;
  quell::write_jpeg(dir.file("full.jpg"), smooth_rgb(64, 64, 1.0), 90);
  const std::string jpeg = quell::testing::read_file(dir.file("full.jpg"));
  // Truncated: libjpeg only warns ("Premature end of JPEG file") and fills in grey.
  write_bytes(dir.file("cut.jpg"), jpeg.substr(0, jpeg.size() / 2));
  EXPECT_TRUE(throws_with([&] { quell::decode_image_file(dir.file("cut.jpg"), 3); },
                          {dir.file("cut.jpg") + ": not a readable JPEG (", "Premature end"}));
  write_bytes(dir.file("head.jpg"), jpeg.substr(0, 40));
  EXPECT_TRUE(throws_with([&] { quell::decode_image_file(dir.file("head.jpg"), 3); },
                          {dir.file("head.jpg") + ": not a readable JPEG ("}));

  quell::write_png(dir.file("full.png"), random_u8({3, 16, 16}, 8));
  const std::string png = quell::testing::read_file(dir.file("full.png"));
  write_bytes(dir.file("cut.png"), png.substr(0, png.size() - 20));
  EXPECT_TRUE(throws_with([&] { quell::decode_image_file(dir.file("cut.png"), 3); },
                          {dir.file("cut.png") + ": not a readable PNG ("}));
  std::string garbled = png;
  for (size_t i = 40; i < garbled.size() - 12; ++i) garbled[i] = static_cast<char>(i * 7);
  write_bytes(dir.file("garbled.png"), garbled);
  EXPECT_TRUE(throws_with([&] { quell::decode_image_file(dir.file("garbled.png"), 3); },
                          {dir.file("garbled.png") + ": not a readable PNG ("}));

  write_bytes(dir.file("garbage.png"), "this is not an image at all");
  EXPECT_TRUE(
      throws_with([&] { quell::decode_image_file(dir.file("garbage.png"), 3); },
                  {dir.file("garbage.png") + ": not a JPEG or PNG image (starts with bytes"}));
  write_bytes(dir.file("empty.jpg"), "");
  EXPECT_TRUE(throws_with([&] { quell::decode_image_file(dir.file("empty.jpg"), 3); },
                          {dir.file("empty.jpg") + ": empty file"}));
  EXPECT_TRUE(throws_with([&] { quell::decode_image_file(dir.file("missing.jpg"), 3); },
                          {dir.file("missing.jpg") + ": cannot open: No such file"}));
}

// ---------------------------------------------------------------------------------------------
// Resize + centre crop

TEST(ImageResize, CentreCropWithoutResizingTakesTorchvisionsOffsets) {
  const auto img = torch::arange(3 * 4 * 7, torch::kLong).view({3, 4, 7}).to(torch::kUInt8);
  quell::ImageGeometry g;
  g.height = 2;
  g.width = 2;
  g.resize = 4;  // = the shorter side: no resampling
  const auto out = quell::resize_center_crop(img, g);
  // top = round((4 - 2) / 2) = 1; left = round((7 - 2) / 2) = round(2.5) = 2 (half to even, as
  // Python's round in torchvision's CenterCrop).
  EXPECT_TRUE(out.equal(img.narrow(1, 1, 2).narrow(2, 2, 2)));
}

TEST(ImageResize, DownscaleMatchesHandComputedAntialiasedBilinear) {
  // A 4x8 gray image, shorter side 4 -> 2 (so 2x4), centre crop 2x2 = columns 1 and 2.
  const auto img = (torch::arange(4, torch::kDouble).view({4, 1}) * 30 +
                    torch::arange(8, torch::kDouble).view({1, 8}) * 20 + 10)
                       .to(torch::kUInt8)
                       .unsqueeze(0);
  quell::ImageGeometry g;
  g.channels = 1;
  g.height = 2;
  g.width = 2;
  const auto out = quell::resize_center_crop(img, g);
  ASSERT_EQ(out.sizes(), (std::vector<int64_t>{1, 2, 2}));
  // Antialiased bilinear at scale 2 is a triangle filter of support 2 (PIL, torchvision):
  // output i weighs input k by 1 - |k + 0.5 - 2 (i + 0.5)| / 2, clipped to the image and
  // normalised. Rows 4 -> 2: (3,3,1,0)/7 and (0,1,3,3)/7. Columns 8 -> 4, outputs 1 and 2:
  // (0,1,3,3,1,0,0,0)/8 and (0,0,0,1,3,3,1,0)/8.
  const double rows[2][4] = {{3, 3, 1, 0}, {0, 1, 3, 3}};
  const double cols[2][8] = {{0, 1, 3, 3, 1, 0, 0, 0}, {0, 0, 0, 1, 3, 3, 1, 0}};
  const auto px = img[0].to(torch::kDouble);
  for (int r = 0; r < 2; ++r) {
    for (int c = 0; c < 2; ++c) {
      double v = 0;
      for (int i = 0; i < 4; ++i) {
        for (int j = 0; j < 8; ++j) {
          v += rows[r][i] / 7.0 * cols[c][j] / 8.0 * px[i][j].item<double>();
        }
      }
      EXPECT_EQ(out[0][r][c].item<uint8_t>(), static_cast<uint8_t>(std::lround(v)))
          << "pixel " << r << "," << c << " expected " << v;
    }
  }
}

TEST(ImageResize, AntialiasedDownscaleOfAConstantImageStaysConstant) {
  const auto img = torch::full({3, 300, 500}, 77, torch::kUInt8);
  quell::ImageGeometry g;
  g.height = 16;
  g.width = 24;
  g.resize = 30;
  const auto out = quell::resize_center_crop(img, g);
  EXPECT_EQ(out.sizes(), (std::vector<int64_t>{3, 16, 24}));
  EXPECT_TRUE(out.eq(77).all().item<bool>());
}

TEST(ImageResize, DctScaledDecodeKeepsTheFullSizeGeometry) {
  ScratchDir dir;
  const auto rgb = smooth_rgb(120, 200, 0.5);
  quell::write_jpeg(dir.file("a.jpg"), rgb, 95);
  quell::ImageGeometry g;
  g.height = g.width = 24;
  const auto fast = quell::load_image(dir.file("a.jpg"), g);
  g.dct_scaling = false;
  const auto full = quell::load_image(dir.file("a.jpg"), g);
  ASSERT_EQ(fast.sizes(), full.sizes());
  // Both are low-pass versions of the same smooth picture: within a few levels.
  const auto diff = (fast.to(torch::kInt) - full.to(torch::kInt)).abs().to(torch::kDouble);
  EXPECT_LT(diff.mean().item<double>(), 3.0);
}

// ---------------------------------------------------------------------------------------------
// Folders

TEST_F(ImageFolder, ClassesAreSortedFilesSortedHiddenAndOtherFilesLeftOut) {
  ScratchDir dir;
  const fs::path root = dir.str();
  write_png_folder(root, {"zebra", "ant", "Moth"}, 2);
  write_bytes((root / "ant" / "notes.txt").string(), "x");
  write_bytes((root / "ant" / ".hidden.png").string(), "x");
  fs::create_directories(root / ".thumbnails");
  quell::write_png((root / "ant" / "UPPER.PNG").string(), random_u8({3, 6, 6}, 9));
  write_bytes((root / "README").string(), "x");
  const auto index = quell::scan_image_folder(root.string());
  EXPECT_EQ(index.classes, (std::vector<std::string>{"Moth", "ant", "zebra"}));  // byte order
  EXPECT_EQ(index.files,
            (std::vector<std::string>{"Moth/0.png", "Moth/1.png", "ant/0.png", "ant/1.png",
                                      "ant/UPPER.PNG", "zebra/0.png", "zebra/1.png"}));
  EXPECT_EQ(index.labels, (std::vector<int64_t>{0, 0, 1, 1, 1, 2, 2}));
  EXPECT_EQ(index.ignored, 2);  // notes.txt, README

  const auto ds = quell::load_dataset(image_options(root.string()));
  EXPECT_EQ(ds.name, "images");
  EXPECT_EQ(ds.num_classes, 3);
  EXPECT_EQ(ds.size(), 7);
  EXPECT_TRUE(ds.targets.equal(torch::tensor({0, 0, 1, 1, 1, 2, 2}, torch::kLong)));
  EXPECT_EQ(ds.sample_shape(), (std::vector<int64_t>{3, 6, 6}));
}

TEST_F(ImageFolder, PixelsAndLabelsSurviveLoadingExactly) {
  ScratchDir dir;
  write_png_folder(dir.str(), {"a", "b"}, 3);
  auto o = image_options(dir.str());
  o.normalise = false;
  const auto ds = quell::load_dataset(o);
  for (int64_t i = 0; i < ds.size(); ++i) {
    const int k = static_cast<int>(i / 3), j = static_cast<int>(i % 3);
    const auto expected = random_u8({3, 6, 6}, 100 + 31 * k + j);
    EXPECT_TRUE(ds.inputs[i].mul(255).round().to(torch::kUInt8).equal(expected)) << i;
  }
}

TEST_F(ImageFolder, SplitsTrainValTrainTestAndOneSharedFolder) {
  ScratchDir dir;
  const fs::path root = dir.str();
  write_png_folder(root / "tv" / "train", {"a", "b"}, 3);
  write_png_folder(root / "tv" / "val", {"a", "b"}, 1);
  write_png_folder(root / "tt" / "train", {"a", "b"}, 2);
  write_png_folder(root / "tt" / "test", {"a", "b"}, 1);
  write_png_folder(root / "one", {"a", "b", "c"}, 2);
  auto o = image_options((root / "tv").string());
  EXPECT_EQ(quell::load_dataset(o).size(), 6);
  o.split = quell::Split::kTest;
  EXPECT_EQ(quell::load_dataset(o).size(), 2);
  EXPECT_EQ(quell::find_image_splits((root / "tt").string()).test, (root / "tt" / "test").string());
  o.dir = (root / "one").string();
  const auto splits = quell::find_image_splits(o.dir);
  EXPECT_TRUE(splits.shared);
  EXPECT_EQ(quell::load_dataset(o).size(), 6);
}

TEST_F(ImageFolder, ShuffleAndLimitDecodeOnlyTheKeptFiles) {
  ScratchDir dir;
  const fs::path root = dir.str();
  write_png_folder(root, {"a", "b"}, 5);
  write_bytes((root / "b" / "9_corrupt.png").string(), "not a png");  // index 10 of 11
  // The kept files are the first 4 of the seeded permutation (the one load_dataset uses): find
  // a seed that leaves the corrupt file out, and one that keeps it.
  uint64_t seed_without = 0, seed_with = 0;
  for (uint64_t seed = 1; seed < 100 && (seed_without == 0 || seed_with == 0); ++seed) {
    auto gen = at::detail::createCPUGenerator(seed);
    const auto kept = torch::randperm(11, gen, torch::kLong).narrow(0, 0, 4);
    (kept.eq(10).any().item<bool>() ? seed_with : seed_without) = seed;
  }
  ASSERT_NE(seed_without, 0u);
  ASSERT_NE(seed_with, 0u);
  auto o = image_options(root.string());
  o.limit = 4;
  o.shuffle_seed = seed_without;
  EXPECT_EQ(quell::load_dataset(o).size(), 4);
  o.shuffle_seed = seed_with;
  EXPECT_TRUE(throws_with([&] { quell::load_dataset(o); },
                          {(root / "b" / "9_corrupt.png").string() + ": not a JPEG or PNG image"}));
  o.limit = 0;
  o.shuffle_seed = 0;
  EXPECT_TRUE(throws_with([&] { quell::load_dataset(o); }, {"9_corrupt.png"}));
}

TEST_F(ImageFolder, SkipBadLeavesUnreadableFilesOutAndCountsThem) {
  ScratchDir dir;
  const fs::path root = dir.str();
  write_png_folder(root, {"a", "b"}, 3);
  quell::write_jpeg((root / "a" / "x.jpg").string(), smooth_rgb(32, 32, 0.0), 90);
  const std::string jpeg = quell::testing::read_file(root / "a" / "x.jpg");
  write_bytes((root / "a" / "x.jpg").string(), jpeg.substr(0, jpeg.size() / 2));
  write_bytes((root / "b" / "empty.png").string(), "");
  auto o = image_options(root.string());
  EXPECT_TRUE(throws_with([&] { quell::load_dataset(o); },
                          {(root / "a" / "x.jpg").string() + ": not a readable JPEG"}));
  o.skip_bad = true;
  const auto ds = quell::load_dataset(o);
  EXPECT_EQ(ds.size(), 6);
  ASSERT_EQ(ds.skipped.size(), 2u);
  EXPECT_NE(ds.skipped[0].find((root / "a" / "x.jpg").string() + ": "), std::string::npos);
  EXPECT_NE(ds.skipped[1].find((root / "b" / "empty.png").string() + ": empty file"),
            std::string::npos);
  EXPECT_TRUE(ds.targets.equal(torch::tensor({0, 0, 0, 1, 1, 1}, torch::kLong)));
  // The cached split remembers the skipped files: without skip_bad it still fails.
  quell::clear_image_memory_cache();
  o.skip_bad = false;
  EXPECT_TRUE(throws_with([&] { quell::load_dataset(o); }, {"x.jpg"}));
}

TEST_F(ImageFolder, DiskCacheRoundTripsExactlyAndACorruptCacheIsIgnored) {
  ScratchDir dir;
  const fs::path root = dir.str();
  write_png_folder(root, {"a", "b"}, 3);
  quell::write_jpeg((root / "b" / "j.jpg").string(), smooth_rgb(40, 60, 2.0), 90);
  auto o = image_options(root.string(), 8);
  o.shuffle_seed = 3;
  const auto first = quell::load_dataset(o);
  const auto files = cache_files();
  ASSERT_EQ(files.size(), 1u);
  const std::string cache_bytes = quell::testing::read_file(files[0]);

  // Same size and modification time, unreadable content: only the cache can still serve it.
  const fs::path jpg = root / "b" / "j.jpg";
  const auto mtime = fs::last_write_time(jpg);
  const std::string jpg_bytes = quell::testing::read_file(jpg);
  write_bytes(jpg.string(), std::string(jpg_bytes.size(), '\0'));
  fs::last_write_time(jpg, mtime);
  quell::clear_image_memory_cache();
  const auto cached = quell::load_dataset(o);
  EXPECT_TRUE(cached.inputs.equal(first.inputs));
  EXPECT_TRUE(cached.targets.equal(first.targets));
  EXPECT_EQ(cached.mean, first.mean);
  auto no_cache = o;
  no_cache.image_cache = false;
  EXPECT_TRUE(throws_with([&] { quell::load_dataset(no_cache); }, {jpg.string()}));

  // A corrupt cache file (one flipped byte; truncated) is ignored: the images are decoded again
  // (now failing on the zeroed file, so the cache file was not used).
  std::string flipped = cache_bytes;
  flipped[flipped.size() / 2] ^= 0x40;
  for (const std::string& bad : {flipped, cache_bytes.substr(0, cache_bytes.size() - 9)}) {
    write_bytes(files[0].string(), bad);
    quell::clear_image_memory_cache();
    EXPECT_TRUE(throws_with([&] { quell::load_dataset(o); }, {jpg.string()}));
  }
  // Restore the image (same bytes, same time): decoded again, the corrupt cache file rewritten.
  write_bytes(jpg.string(), jpg_bytes);
  fs::last_write_time(jpg, mtime);
  quell::clear_image_memory_cache();
  EXPECT_TRUE(quell::load_dataset(o).inputs.equal(first.inputs));
  ASSERT_EQ(cache_files().size(), 1u);
  EXPECT_EQ(quell::testing::read_file(files[0]), cache_bytes);

  // image_cache = false writes nothing.
  for (const auto& f : cache_files()) fs::remove(f);
  quell::load_dataset(no_cache);
  EXPECT_TRUE(cache_files().empty());
}

TEST_F(ImageFolder, ComputedNormalisationIsStandardOnTrainAndTheTestSplitUsesTrainValues) {
  ScratchDir dir;
  const fs::path root = dir.str();
  write_png_folder(root / "train", {"a", "b"}, 4);
  write_png_folder(root / "val", {"a", "b"}, 2);
  auto o = image_options(root.string());
  const auto train = quell::load_dataset(o);
  const auto per_channel = train.inputs.transpose(0, 1).reshape({3, -1}).to(torch::kDouble);
  for (int c = 0; c < 3; ++c) {
    EXPECT_NEAR(per_channel[c].mean().item<double>(), 0.0, 1e-5) << "channel " << c;
    EXPECT_NEAR(per_channel[c].std(/*unbiased=*/false).item<double>(), 1.0, 1e-5) << c;
    EXPECT_GT(train.mean[c], 0.3);  // uniform random bytes: mean ~0.5, std ~0.29
    EXPECT_LT(train.mean[c], 0.7);
  }
  o.split = quell::Split::kTest;
  quell::clear_image_memory_cache();  // the test split's load decodes train for its statistics
  const auto test = quell::load_dataset(o);
  EXPECT_EQ(test.mean, train.mean);
  EXPECT_EQ(test.stddev, train.stddev);

  o.mean = {0.5, 0.5, 0.5};
  o.stddev = {0.25, 0.25, 0.25};
  const auto given = quell::load_dataset(o);
  EXPECT_EQ(given.mean, o.mean);
  o.normalise = false;
  const auto raw = quell::load_dataset(o);
  EXPECT_TRUE(given.inputs.allclose((raw.inputs - 0.5) / 0.25, 1e-5, 1e-5));
}

TEST_F(ImageFolder, BadOptionsAndLayoutsAreClearErrors) {
  ScratchDir dir;
  const fs::path root = dir.str();
  write_png_folder(root / "ok", {"a", "b"}, 1);
  auto o = image_options((root / "ok").string());
  o.height = 0;
  EXPECT_TRUE(throws_with([&] { quell::load_dataset(o); }, {"'images'", "image size"}));
  o = image_options((root / "missing").string());
  EXPECT_TRUE(throws_with([&] { quell::load_dataset(o); },
                          {(root / "missing").string() + ": no such directory"}));
  o = image_options((root / "ok").string());
  o.channels = 4;
  EXPECT_TRUE(throws_with([&] { quell::load_dataset(o); }, {"channels must be 1", "4"}));
  o = image_options((root / "ok").string());
  o.resize = 4;
  EXPECT_TRUE(throws_with([&] { quell::load_dataset(o); }, {"resize 4", "6x6"}));
  o = image_options((root / "ok").string());
  o.mean = {0.5, 0.5};
  o.stddev = {0.2, 0.2};
  EXPECT_TRUE(throws_with([&] { quell::load_dataset(o); }, {"one value per channel (3)"}));
  o.mean = {0.5};  // one value serves every channel
  o.stddev = {0.25};
  {
    o.normalise = false;
    const quell::Dataset raw = quell::load_dataset(o);
    o.normalise = true;
    const quell::Dataset d = quell::load_dataset(o);
    EXPECT_EQ(d.mean, (std::vector<double>{0.5, 0.5, 0.5}));
    EXPECT_TRUE(torch::allclose(d.inputs, (raw.inputs - 0.5) / 0.25, 1e-5, 1e-6));
  }
  o.mean = {0.5, 0.5, 0.5};
  o.stddev.clear();
  EXPECT_TRUE(throws_with([&] { quell::load_dataset(o); }, {"both mean and std"}));

  // 2 images of 3x100000x100000 as float32 are 240 GB: refused before anything is decoded.
  o = image_options((root / "ok").string(), 100000);
  EXPECT_TRUE(throws_with([&] { quell::load_dataset(o); },
                          {"2 images of 3x100000x100000", "as float32", "a limit"}));

  fs::create_directories(root / "noclasses");
  write_bytes((root / "noclasses" / "x.png").string(), "x");
  EXPECT_TRUE(
      throws_with([&] { quell::load_dataset(image_options((root / "noclasses").string())); },
                  {(root / "noclasses").string() + ": no class folders"}));
  fs::create_directories(root / "noimages" / "a");
  write_bytes((root / "noimages" / "a" / "x.txt").string(), "x");
  EXPECT_TRUE(throws_with([&] { quell::load_dataset(image_options((root / "noimages").string())); },
                          {(root / "noimages").string() + ": no images", "1 other files"}));

  write_png_folder(root / "mis" / "train", {"a", "b", "c"}, 1);
  write_png_folder(root / "mis" / "val", {"a", "b", "d"}, 1);
  EXPECT_TRUE(throws_with([&] { quell::load_dataset(image_options((root / "mis").string())); },
                          {(root / "mis" / "train").string(), (root / "mis" / "val").string(),
                           "'c' only in", "'d' only in"}));
  write_png_folder(root / "half" / "train", {"a"}, 1);
  EXPECT_TRUE(throws_with([&] { quell::load_dataset(image_options((root / "half").string())); },
                          {(root / "half").string() + ": has a train/ folder but neither val/"}));
}

TEST(ImagePreprocessingJson, RoundTripsTheImageOptions) {
  quell::DataOptions o;
  o.name = "images";
  o.channels = 1;
  o.height = 24;
  o.width = 32;
  o.resize = 40;
  o.mean = {0.4};
  o.stddev = {0.2};
  const quell::Json j = o.preprocessing_json();
  quell::DataOptions back;
  back.apply_preprocessing_json(j);
  EXPECT_EQ(back.preprocessing_json(), j);
  EXPECT_EQ(back.name, "images");
  EXPECT_EQ(back.height, 24);
  quell::DataOptions other;
  other.name = "mnist";
  EXPECT_EQ(other.preprocessing_json(), (quell::Json{{"dataset", "mnist"}}));
  EXPECT_TRUE(throws_with(
      [&] {
        back.apply_preprocessing_json(quell::Json{{"height", 3}});
      },
      {"bad data preprocessing record"}));
}

}  // namespace
