// Tests of the dataset readers and writers: round trips, malformed files (every error names the
// file and the problem), normalisation, limit and seeded shuffle, default directories, and the
// synthetic generator's learnability.
#include "quell_test_paths.h"
#include "quell/data.h"

#include "test_util.h"

#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>
#include <torch/torch.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <initializer_list>
#include <optional>
#include <string>
#include <vector>

namespace {

namespace fs = std::filesystem;

const char* const kRealFashionMnist = "/usr/share/datasets/fashion-mnist";

using quell::testing::ScratchDir;
using quell::testing::throws_with;

void write_bytes(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(out.good()) << path;
}

std::vector<uint8_t> file_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), {});
}

void append_be32(std::vector<uint8_t>& out, uint32_t v) {
  for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<uint8_t>(v >> shift));
}

/// An IDX image file with a hand-made header and `payload` bytes of pixels.
std::vector<uint8_t> idx_images_bytes(uint32_t magic, uint32_t n, uint32_t rows, uint32_t cols,
                                      size_t payload) {
  std::vector<uint8_t> b;
  append_be32(b, magic);
  append_be32(b, n);
  append_be32(b, rows);
  append_be32(b, cols);
  b.resize(b.size() + payload, 7);
  return b;
}

std::vector<uint8_t> idx_labels_bytes(uint32_t magic, uint32_t n, size_t payload) {
  std::vector<uint8_t> b;
  append_be32(b, magic);
  append_be32(b, n);
  b.resize(b.size() + payload, 1);
  return b;
}


torch::Tensor random_u8(std::vector<int64_t> shape, uint64_t seed) {
  auto gen = at::detail::createCPUGenerator(seed);
  return torch::randint(0, 256, shape, gen, torch::kUInt8);
}

torch::Tensor random_labels(int64_t n, int64_t classes, uint64_t seed) {
  auto gen = at::detail::createCPUGenerator(seed);
  return torch::randint(0, classes, {n}, gen, torch::kLong);
}

/// Writes an IDX dataset for `prefix` ("train" / "t10k") into `dir`.
void write_idx_split(const ScratchDir& dir, const std::string& prefix, const torch::Tensor& images,
                     const torch::Tensor& labels, bool gzip) {
  const std::string ext = gzip ? ".gz" : "";
  quell::write_idx_images(dir.file(prefix + "-images-idx3-ubyte" + ext), images, gzip);
  quell::write_idx_labels(dir.file(prefix + "-labels-idx1-ubyte" + ext), labels, gzip);
}

/// Images whose first two pixels encode their index (i % 256, i / 256), labels i % 10: lets a
/// test recover which original sample it is looking at after shuffling.
std::pair<torch::Tensor, torch::Tensor> indexed_idx_data(int64_t n) {
  auto images = torch::zeros({n, 1, 4, 4}, torch::kUInt8);
  auto flat = images.view({n, 16});
  const auto idx = torch::arange(n, torch::kLong);
  flat.select(1, 0).copy_(idx.remainder(256));
  flat.select(1, 1).copy_(idx.div(256, "floor"));
  return {images, idx.remainder(10)};
}

torch::Tensor decode_index(const quell::Dataset& ds) {
  // normalise = false, so pixels are u8 / 255 exactly representable after rounding.
  const auto px = ds.inputs.view({ds.size(), -1}).mul(255.0f).round().to(torch::kLong);
  return px.select(1, 0) + px.select(1, 1) * 256;
}

// ---------------------------------------------------------------------------------------------
// Round trips

class IdxRoundTrip : public ::testing::TestWithParam<bool> {};

TEST_P(IdxRoundTrip, ImagesAndLabelsSurvive) {
  const bool gzip = GetParam();
  ScratchDir dir;
  const auto images = random_u8({37, 1, 5, 7}, 1);
  const auto labels = random_labels(37, 10, 2);
  const std::string ipath = dir.file("img");
  const std::string lpath = dir.file("lab");
  quell::write_idx_images(ipath, images, gzip);
  quell::write_idx_labels(lpath, labels, gzip);

  const auto raw = file_bytes(ipath);
  ASSERT_GE(raw.size(), 2u);
  EXPECT_EQ(gzip, raw[0] == 0x1f && raw[1] == 0x8b);
  if (!gzip) {
    EXPECT_EQ(raw.size(), 16u + 37u * 5u * 7u);
  }

  const auto images2 = quell::read_idx_images(ipath);
  const auto labels2 = quell::read_idx_labels(lpath);
  EXPECT_EQ(images2.scalar_type(), torch::kUInt8);
  EXPECT_EQ(images2.sizes(), torch::IntArrayRef({37, 1, 5, 7}));
  EXPECT_TRUE(torch::equal(images2, images));
  EXPECT_EQ(labels2.scalar_type(), torch::kLong);
  EXPECT_TRUE(torch::equal(labels2, labels));
}

TEST_P(IdxRoundTrip, AcceptsThreeDimensionalImages) {
  ScratchDir dir;
  const auto images = random_u8({4, 6, 3}, 3);
  quell::write_idx_images(dir.file("img"), images, GetParam());
  EXPECT_TRUE(torch::equal(quell::read_idx_images(dir.file("img")), images.unsqueeze(1)));
}

INSTANTIATE_TEST_SUITE_P(RawAndGzip, IdxRoundTrip, ::testing::Bool(),
                         [](const auto& info) { return info.param ? "gzip" : "raw"; });

TEST(ReadFileMaybeGz, RawFileIsReturnedAsIs) {
  ScratchDir dir;
  const std::vector<uint8_t> bytes = {0, 1, 2, 0x1f, 0x8b, 255};
  write_bytes(dir.file("raw"), bytes);
  EXPECT_EQ(quell::read_file_maybe_gz(dir.file("raw")), bytes);
}

TEST(ReadFileMaybeGz, ConcatenatedGzipMembersAreJoined) {
  // gzip -c a >x; gzip -c b >>x gives a valid two-member file that gunzips to a then b.
  ScratchDir dir;
  const auto a = random_u8({1000}, 4);
  const auto b = random_u8({3000}, 5);
  quell::write_idx_labels(dir.file("a.gz"), a.to(torch::kLong), /*gzip=*/true);
  quell::write_idx_labels(dir.file("b.gz"), b.to(torch::kLong), /*gzip=*/true);
  auto joined = file_bytes(dir.file("a.gz"));
  const auto second = file_bytes(dir.file("b.gz"));
  joined.insert(joined.end(), second.begin(), second.end());
  write_bytes(dir.file("ab.gz"), joined);

  const auto out = quell::read_file_maybe_gz(dir.file("ab.gz"));
  ASSERT_EQ(out.size(), 8u + 1000u + 8u + 3000u);
  EXPECT_EQ(out[8], a[0].item<uint8_t>());
  EXPECT_EQ(out[8 + 1000 + 8 + 2999], b[2999].item<uint8_t>());
}

TEST(CifarRoundTrip, Cifar10OneLabelByte) {
  ScratchDir dir;
  const auto images = random_u8({6, 3, 32, 32}, 6);
  const auto labels = random_labels(6, 10, 7);
  quell::write_cifar_bin(dir.file("b.bin"), images, labels, 1);
  EXPECT_EQ(fs::file_size(dir.file("b.bin")), 6u * 3073u);
  const auto [images2, labels2] = quell::read_cifar_bin(dir.file("b.bin"), 1, 10);
  EXPECT_TRUE(torch::equal(images2, images));
  EXPECT_TRUE(torch::equal(labels2, labels));
}

TEST(CifarRoundTrip, Cifar100UsesFineLabel) {
  ScratchDir dir;
  const auto images = random_u8({5, 3, 32, 32}, 8);
  const auto labels = torch::tensor({0, 99, 42, 57, 5}, torch::kLong);
  quell::write_cifar_bin(dir.file("t.bin"), images, labels, 2);
  const auto bytes = file_bytes(dir.file("t.bin"));
  ASSERT_EQ(bytes.size(), 5u * 3074u);
  EXPECT_EQ(bytes[3074 + 1], 99);  // record 1: <coarse><fine=99>
  EXPECT_LT(bytes[3074], 20);      // coarse label in the 20-superclass range
  const auto [images2, labels2] = quell::read_cifar_bin(dir.file("t.bin"), 2, 100);
  EXPECT_TRUE(torch::equal(images2, images));
  EXPECT_TRUE(torch::equal(labels2, labels));
}

TEST(LoadDataset, Cifar10ReadsFiveTrainBatchesAndTestBatch) {
  ScratchDir dir;
  std::vector<torch::Tensor> parts;
  for (int b = 1; b <= 5; ++b) {
    auto images = torch::full({2, 3, 32, 32}, b * 10, torch::kUInt8);
    quell::write_cifar_bin(dir.file("data_batch_" + std::to_string(b) + ".bin"), images,
                           torch::full({2}, b, torch::kLong), 1);
  }
  quell::write_cifar_bin(dir.file("test_batch.bin"), random_u8({3, 3, 32, 32}, 9),
                         torch::tensor({9, 0, 4}, torch::kLong), 1);

  quell::DataOptions opts;
  opts.name = "cifar10";
  opts.dir = dir.str();
  opts.normalise = false;
  const auto train = quell::load_dataset(opts);
  EXPECT_EQ(train.name, "cifar10");
  EXPECT_EQ(train.num_classes, 10);
  EXPECT_EQ(train.size(), 10);
  EXPECT_EQ(train.sample_shape(), (std::vector<int64_t>{3, 32, 32}));
  EXPECT_TRUE(torch::equal(train.targets, torch::tensor({1, 1, 2, 2, 3, 3, 4, 4, 5, 5})));
  EXPECT_NEAR(train.inputs[9][2][31][31].item<float>(), 50.0f / 255.0f, 1e-7);

  opts.split = quell::Split::kTest;
  const auto test = quell::load_dataset(opts);
  EXPECT_EQ(test.size(), 3);
  EXPECT_TRUE(torch::equal(test.targets, torch::tensor({9, 0, 4})));
}

TEST(LoadDataset, Cifar100ReadsTrainAndTestBin) {
  ScratchDir dir;
  quell::write_cifar_bin(dir.file("train.bin"), random_u8({4, 3, 32, 32}, 10),
                         torch::tensor({99, 0, 50, 7}), 2);
  quell::write_cifar_bin(dir.file("test.bin"), random_u8({2, 3, 32, 32}, 11),
                         torch::tensor({1, 98}), 2);
  quell::DataOptions opts;
  opts.name = "cifar100";
  opts.dir = dir.str();
  const auto train = quell::load_dataset(opts);
  EXPECT_EQ(train.num_classes, 100);
  EXPECT_DOUBLE_EQ(train.chance(), 0.01);
  EXPECT_TRUE(torch::equal(train.targets, torch::tensor({99, 0, 50, 7})));
  opts.split = quell::Split::kTest;
  EXPECT_TRUE(torch::equal(quell::load_dataset(opts).targets, torch::tensor({1, 98})));
}

TEST(LoadDataset, ReadsRawAndGzipVariants) {
  for (const bool gzip : {false, true}) {
    ScratchDir dir;
    const auto images = random_u8({12, 1, 28, 28}, 12);
    const auto labels = random_labels(12, 10, 13);
    write_idx_split(dir, "t10k", images, labels, gzip);
    quell::DataOptions opts;
    opts.name = "mnist";
    opts.dir = dir.str();
    opts.split = quell::Split::kTest;
    opts.normalise = false;
    const auto ds = quell::load_dataset(opts);
    EXPECT_EQ(ds.inputs.scalar_type(), torch::kFloat);
    EXPECT_TRUE(ds.inputs.is_contiguous());
    EXPECT_TRUE(torch::equal(ds.targets, labels)) << "gzip=" << gzip;
    EXPECT_TRUE(torch::allclose(ds.inputs, images.to(torch::kFloat) / 255.0f)) << "gzip=" << gzip;
  }
}

// ---------------------------------------------------------------------------------------------
// Malformed IDX files

TEST(IdxImagesMalformed, EmptyFile) {
  ScratchDir dir;
  const auto path = dir.file("empty-images");
  write_bytes(path, {});
  EXPECT_TRUE(throws_with<std::runtime_error>([&] { quell::read_idx_images(path); }, {path + ": ", "empty file"}));
}

TEST(IdxImagesMalformed, TruncatedHeader) {
  ScratchDir dir;
  const auto path = dir.file("short-images");
  write_bytes(path, {0, 0, 8, 3, 0, 0});
  EXPECT_TRUE(throws_with<std::runtime_error>([&] { quell::read_idx_images(path); },
                          {path + ": ", "truncated", "6 bytes", "16-byte IDX image header"}));
}

TEST(IdxImagesMalformed, TruncatedPayload) {
  ScratchDir dir;
  const auto path = dir.file("train-images-idx3-ubyte");
  write_bytes(path, idx_images_bytes(0x803, 3, 4, 5, 59));
  EXPECT_TRUE(throws_with<std::runtime_error>(
      [&] { quell::read_idx_images(path); },
      {path + ": truncated: header says 3 images of 4x5 (60 bytes) but 59 bytes follow"}));
}

TEST(IdxImagesMalformed, TruncatedGzipPayloadIsReportedAsTruncatedImages) {
  ScratchDir dir;
  const auto path = dir.file("images.gz");
  quell::write_idx_images(path, random_u8({10, 1, 28, 28}, 14), /*gzip=*/true);
  // Re-write the same pixels with a header that promises 60000 images.
  auto bytes = quell::read_file_maybe_gz(path);
  bytes[4] = 0;
  bytes[5] = 0;
  bytes[6] = 0xea;  // 60000 = 0x0000ea60
  bytes[7] = 0x60;
  write_bytes(dir.file("raw"), bytes);
  EXPECT_TRUE(throws_with<std::runtime_error>(
      [&] { quell::read_idx_images(dir.file("raw")); },
      {dir.file("raw") + ": truncated: header says 60000 images of 28x28 (47040000 bytes) but "
                         "7840 bytes follow"}));
}

TEST(IdxImagesMalformed, Oversized) {
  ScratchDir dir;
  const auto path = dir.file("big-images");
  write_bytes(path, idx_images_bytes(0x803, 3, 4, 5, 61));
  EXPECT_TRUE(throws_with<std::runtime_error>([&] { quell::read_idx_images(path); },
                          {path + ": oversized: header says 3 images of 4x5 (60 bytes) but 61 "
                                  "bytes follow"}));
}

TEST(IdxImagesMalformed, WrongMagic) {
  ScratchDir dir;
  const auto path = dir.file("magic-images");
  write_bytes(path, idx_images_bytes(0x0a0b0c0d, 1, 1, 1, 1));
  EXPECT_TRUE(throws_with<std::runtime_error>([&] { quell::read_idx_images(path); },
                          {path + ": ", "bad magic 0x0a0b0c0d", "expected 0x00000803"}));
}

TEST(IdxImagesMalformed, LabelFilePassedAsImages) {
  ScratchDir dir;
  const auto path = dir.file("labels-as-images");
  quell::write_idx_labels(path, random_labels(100, 10, 15), /*gzip=*/false);
  EXPECT_TRUE(throws_with<std::runtime_error>([&] { quell::read_idx_images(path); },
                          {path + ": ", "bad magic 0x00000801", "looks like an IDX label file"}));
}

TEST(IdxImagesMalformed, ZeroDimensions) {
  ScratchDir dir;
  for (const auto& dims : std::vector<std::array<uint32_t, 3>>{{0, 28, 28}, {5, 0, 28}, {5, 28, 0}}) {
    const auto path = dir.file("zero-images");
    write_bytes(path, idx_images_bytes(0x803, dims[0], dims[1], dims[2], 0));
    EXPECT_TRUE(throws_with<std::runtime_error>([&] { quell::read_idx_images(path); },
                            {path + ": bad dimensions: " + std::to_string(dims[0]) +
                             " images of " + std::to_string(dims[1]) + "x" +
                             std::to_string(dims[2])}));
  }
}

TEST(IdxImagesMalformed, DimensionsOverflowing64Bits) {
  ScratchDir dir;
  const auto path = dir.file("huge-images");
  write_bytes(path, idx_images_bytes(0x803, 0xffffffff, 0xffffffff, 0xffffffff, 10));
  EXPECT_TRUE(throws_with<std::runtime_error>([&] { quell::read_idx_images(path); },
                          {path + ": bad dimensions", "too large"}));
}

TEST(IdxLabelsMalformed, EmptyTruncatedOversizedMagicAndZeroCount) {
  ScratchDir dir;
  const auto path = dir.file("train-labels-idx1-ubyte");
  const auto check = [&](const std::vector<uint8_t>& bytes, std::initializer_list<std::string> n) {
    write_bytes(path, bytes);
    return throws_with<std::runtime_error>([&] { quell::read_idx_labels(path); }, n);
  };
  EXPECT_TRUE(check({}, {path + ": empty file"}));
  EXPECT_TRUE(check({0, 0, 8, 1, 0}, {path + ": truncated", "8-byte IDX label header"}));
  EXPECT_TRUE(check(idx_labels_bytes(0x801, 10, 9),
                    {path + ": truncated: header says 10 labels (10 bytes) but 9 bytes follow"}));
  EXPECT_TRUE(check(idx_labels_bytes(0x801, 10, 11),
                    {path + ": oversized: header says 10 labels (10 bytes) but 11 bytes follow"}));
  EXPECT_TRUE(check(idx_labels_bytes(0x803, 1, 1),
                    {path + ": bad magic 0x00000803", "expected 0x00000801",
                     "looks like an IDX image file"}));
  EXPECT_TRUE(check(idx_labels_bytes(0x801, 0, 0), {path + ": bad dimensions", "0 labels"}));
}

TEST(IdxMalformed, MissingFile) {
  ScratchDir dir;
  const auto path = dir.file("does-not-exist.gz");
  EXPECT_TRUE(throws_with<std::runtime_error>([&] { quell::read_idx_images(path); },
                          {path + ": cannot open: No such file or directory"}));
  EXPECT_TRUE(throws_with<std::runtime_error>([&] { quell::read_idx_labels(path); },
                          {path + ": cannot open: No such file or directory"}));
  EXPECT_TRUE(throws_with<std::runtime_error>([&] { quell::read_cifar_bin(path, 1, 10); },
                          {path + ": cannot open: No such file or directory"}));
}

TEST(IdxMalformed, DirectoryInsteadOfFile) {
  ScratchDir dir;
  EXPECT_TRUE(throws_with<std::runtime_error>([&] { quell::read_idx_images(dir.str()); }, {dir.str() + ": "}));
}

TEST(IdxMalformed, CorruptGzipStream) {
  ScratchDir dir;
  const auto path = dir.file("corrupt.gz");
  quell::write_idx_images(path, random_u8({50, 1, 28, 28}, 16), /*gzip=*/true);
  auto bytes = file_bytes(path);
  ASSERT_GT(bytes.size(), 200u);
  for (size_t i = 20; i < 120; ++i) bytes[i] ^= 0x5a;  // scramble the deflate stream
  write_bytes(path, bytes);
  EXPECT_TRUE(throws_with<std::runtime_error>([&] { quell::read_idx_images(path); },
                          {path + ": corrupt gzip stream"}));
}

TEST(IdxMalformed, GzipWithBadChecksum) {
  ScratchDir dir;
  const auto path = dir.file("crc.gz");
  quell::write_idx_labels(path, random_labels(500, 10, 17), /*gzip=*/true);
  auto bytes = file_bytes(path);
  bytes[bytes.size() - 8] ^= 0xff;  // CRC-32 field of the trailer
  write_bytes(path, bytes);
  EXPECT_TRUE(throws_with<std::runtime_error>([&] { quell::read_idx_labels(path); },
                          {path + ": corrupt gzip stream", "check"}));
}

TEST(IdxMalformed, TruncatedGzipStream) {
  ScratchDir dir;
  const auto path = dir.file("cut.gz");
  quell::write_idx_images(path, random_u8({50, 1, 28, 28}, 18), /*gzip=*/true);
  auto bytes = file_bytes(path);
  bytes.resize(bytes.size() / 2);
  write_bytes(path, bytes);
  EXPECT_TRUE(throws_with<std::runtime_error>([&] { quell::read_idx_images(path); },
                          {path + ": corrupt gzip stream", "truncated"}));
  bytes.resize(2);  // the magic alone
  write_bytes(path, bytes);
  EXPECT_TRUE(throws_with<std::runtime_error>([&] { quell::read_idx_images(path); },
                          {path + ": corrupt gzip stream"}));
}

TEST(IdxMalformed, TrailingGarbageAfterGzipStream) {
  ScratchDir dir;
  const auto path = dir.file("trailing.gz");
  quell::write_idx_labels(path, random_labels(20, 10, 19), /*gzip=*/true);
  auto bytes = file_bytes(path);
  bytes.insert(bytes.end(), {1, 2, 3});
  write_bytes(path, bytes);
  EXPECT_TRUE(throws_with<std::runtime_error>([&] { quell::read_idx_labels(path); },
                          {path + ": corrupt gzip stream", "3 bytes of trailing data"}));
}

// ---------------------------------------------------------------------------------------------
// Malformed datasets in load_dataset

TEST(LoadDatasetMalformed, CountMismatchNamesBothFiles) {
  ScratchDir dir;
  quell::write_idx_images(dir.file("train-images-idx3-ubyte.gz"), random_u8({9, 1, 28, 28}, 20),
                          true);
  quell::write_idx_labels(dir.file("train-labels-idx1-ubyte.gz"), random_labels(10, 10, 21),
                          true);
  quell::DataOptions opts;
  opts.name = "fashion-mnist";
  opts.dir = dir.str();
  EXPECT_TRUE(throws_with<std::runtime_error>([&] { quell::load_dataset(opts); },
                          {dir.file("train-labels-idx1-ubyte.gz") + ": count mismatch: 10 labels",
                           dir.file("train-images-idx3-ubyte.gz") + " has 9 images"}));
}

TEST(LoadDatasetMalformed, IdxLabelOutOfRange) {
  ScratchDir dir;
  auto labels = random_labels(8, 10, 22);
  labels[5] = 10;
  write_idx_split(dir, "train", random_u8({8, 1, 28, 28}, 23), labels, /*gzip=*/false);
  quell::DataOptions opts;
  opts.name = "mnist";
  opts.dir = dir.str();
  EXPECT_TRUE(throws_with<std::runtime_error>([&] { quell::load_dataset(opts); },
                          {dir.file("train-labels-idx1-ubyte") + ": label 10 at index 5",
                           "out of range for 10 classes"}));
}

TEST(LoadDatasetMalformed, MissingIdxFilesNameBothVariants) {
  ScratchDir dir;
  quell::DataOptions opts;
  opts.name = "mnist";
  opts.dir = dir.str();
  opts.split = quell::Split::kTest;
  EXPECT_TRUE(throws_with<std::runtime_error>([&] { quell::load_dataset(opts); },
                          {dir.file("t10k-images-idx3-ubyte.gz") +
                               ": cannot open: No such file or directory",
                           dir.file("t10k-images-idx3-ubyte")}));
}

TEST(LoadDatasetMalformed, MissingCifarBatch) {
  ScratchDir dir;
  for (int b = 1; b <= 4; ++b) {
    quell::write_cifar_bin(dir.file("data_batch_" + std::to_string(b) + ".bin"),
                           random_u8({1, 3, 32, 32}, 24), torch::tensor({3}), 1);
  }
  quell::DataOptions opts;
  opts.name = "cifar10";
  opts.dir = dir.str();
  EXPECT_TRUE(throws_with<std::runtime_error>([&] { quell::load_dataset(opts); },
                          {dir.file("data_batch_5.bin") + ": cannot open: No such file"}));
}

TEST(LoadDatasetMalformed, UnknownNameListsKnownOnes) {
  quell::DataOptions opts;
  opts.name = "imagenet";
  EXPECT_TRUE(throws_with<std::runtime_error>(
      [&] { quell::load_dataset(opts); },
      {"unknown dataset 'imagenet'", "fashion-mnist", "mnist", "cifar10", "cifar100", "images"}));
  EXPECT_TRUE(throws_with<std::runtime_error>([&] { quell::dataset_normalisation("svhn"); },
                          {"unknown dataset 'svhn'", "cifar100"}));
}

TEST(LoadDatasetMalformed, NegativeLimit) {
  quell::DataOptions opts;
  opts.name = "mnist";
  opts.limit = -1;
  EXPECT_TRUE(throws_with<std::runtime_error>([&] { quell::load_dataset(opts); }, {"limit", "-1"}));
}

TEST(CifarMalformed, EmptyPartialRecordAndLabelOutOfRange) {
  ScratchDir dir;
  const auto path = dir.file("data_batch_1.bin");
  write_bytes(path, {});
  EXPECT_TRUE(throws_with<std::runtime_error>([&] { quell::read_cifar_bin(path, 1, 10); },
                          {path + ": empty file", "3073-byte CIFAR records"}));

  quell::write_cifar_bin(path, random_u8({2, 3, 32, 32}, 25), torch::tensor({1, 2}), 1);
  auto bytes = file_bytes(path);
  bytes.pop_back();
  write_bytes(path, bytes);
  EXPECT_TRUE(throws_with<std::runtime_error>([&] { quell::read_cifar_bin(path, 1, 10); },
                          {path + ": truncated", "6145 bytes", "1 records and 3072 extra bytes"}));

  bytes.push_back(0);
  bytes[3073] = 10;  // record 1's label
  write_bytes(path, bytes);
  EXPECT_TRUE(throws_with<std::runtime_error>([&] { quell::read_cifar_bin(path, 1, 10); },
                          {path + ": label 10 of record 1 is out of range for 10 classes"}));

  // CIFAR-10 records read as CIFAR-100 records: 6146 is not a multiple of 3074.
  EXPECT_TRUE(throws_with<std::runtime_error>([&] { quell::read_cifar_bin(path, 2, 100); },
                          {path + ": ", "3074-byte CIFAR records"}));
}

TEST(CifarMalformed, Cifar100FineLabelOutOfRange) {
  ScratchDir dir;
  const auto path = dir.file("test.bin");
  quell::write_cifar_bin(path, random_u8({1, 3, 32, 32}, 26), torch::tensor({100}), 2);
  EXPECT_TRUE(throws_with<std::runtime_error>([&] { quell::read_cifar_bin(path, 2, 100); },
                          {path + ": label 100 of record 0 is out of range for 100 classes"}));
}

// ---------------------------------------------------------------------------------------------
// Normalisation, limit, shuffle

TEST(Normalisation, PerDatasetConstants) {
  const auto [fm_mean, fm_std] = quell::dataset_normalisation("fashion-mnist");
  EXPECT_EQ(fm_mean, std::vector<double>{0.2860});
  EXPECT_EQ(fm_std, std::vector<double>{0.3530});
  const auto [m_mean, m_std] = quell::dataset_normalisation("mnist");
  EXPECT_EQ(m_mean, std::vector<double>{0.1307});
  EXPECT_EQ(m_std, std::vector<double>{0.3081});
  const auto [c10_mean, c10_std] = quell::dataset_normalisation("cifar10");
  EXPECT_EQ(c10_mean, (std::vector<double>{0.4914, 0.4822, 0.4465}));
  EXPECT_EQ(c10_std, (std::vector<double>{0.2470, 0.2435, 0.2616}));
  const auto [c100_mean, c100_std] = quell::dataset_normalisation("cifar100");
  EXPECT_EQ(c100_mean, (std::vector<double>{0.5071, 0.4865, 0.4409}));
  EXPECT_EQ(c100_std, (std::vector<double>{0.2673, 0.2564, 0.2762}));
  EXPECT_EQ(quell::dataset_names(),
            (std::vector<std::string>{"fashion-mnist", "mnist", "cifar10", "cifar100", "images", "tensors"}));
  // Image folders have no fixed constants (computed from the data or given).
  EXPECT_TRUE(throws_with<std::runtime_error>([&] { quell::dataset_normalisation("images"); }, {"'images'"}));
}

TEST(Normalisation, IdxPixelsMapToStandardisedValues) {
  ScratchDir dir;
  auto images = torch::zeros({3, 1, 2, 2}, torch::kUInt8);
  images[0].fill_(0);
  images[1].fill_(128);
  images[2].fill_(255);
  write_idx_split(dir, "train", images, torch::tensor({0, 1, 2}), /*gzip=*/true);
  quell::DataOptions opts;
  opts.name = "mnist";
  opts.dir = dir.str();
  const auto ds = quell::load_dataset(opts);
  EXPECT_EQ(ds.mean, std::vector<double>{0.1307});
  EXPECT_EQ(ds.stddev, std::vector<double>{0.3081});
  for (int i = 0; i < 3; ++i) {
    const double u8 = i == 0 ? 0.0 : (i == 1 ? 128.0 : 255.0);
    const double expected = (u8 / 255.0 - 0.1307) / 0.3081;
    EXPECT_NEAR(ds.inputs[i][0][1][1].item<float>(), expected, 1e-5) << "pixel " << u8;
  }

  opts.normalise = false;
  const auto plain = quell::load_dataset(opts);
  EXPECT_EQ(plain.mean, std::vector<double>{0.0});
  EXPECT_EQ(plain.stddev, std::vector<double>{1.0});
  EXPECT_FLOAT_EQ(plain.inputs[1][0][0][0].item<float>(), 128.0f / 255.0f);
  EXPECT_FLOAT_EQ(plain.inputs[2][0][0][0].item<float>(), 1.0f);
}

TEST(Normalisation, CifarUsesPerChannelConstants) {
  ScratchDir dir;
  auto images = torch::full({1, 3, 32, 32}, 200, torch::kUInt8);
  quell::write_cifar_bin(dir.file("test.bin"), images, torch::tensor({5}), 2);
  quell::DataOptions opts;
  opts.name = "cifar100";
  opts.dir = dir.str();
  opts.split = quell::Split::kTest;
  const auto ds = quell::load_dataset(opts);
  const double mean[3] = {0.5071, 0.4865, 0.4409};
  const double stddev[3] = {0.2673, 0.2564, 0.2762};
  for (int c = 0; c < 3; ++c) {
    const auto channel = ds.inputs[0][c];
    const double expected = (200.0 / 255.0 - mean[c]) / stddev[c];
    EXPECT_NEAR(channel.min().item<float>(), expected, 1e-5) << "channel " << c;
    EXPECT_NEAR(channel.max().item<float>(), expected, 1e-5) << "channel " << c;
  }
  opts.normalise = false;
  const auto plain = quell::load_dataset(opts);
  EXPECT_EQ(plain.mean, std::vector<double>(3, 0.0));
  EXPECT_EQ(plain.stddev, std::vector<double>(3, 1.0));
}

class LimitAndShuffle : public ::testing::Test {
 protected:
  static constexpr int64_t kN = 300;
  void SetUp() override {
    const auto [images, labels] = indexed_idx_data(kN);
    write_idx_split(dir_, "train", images, labels, /*gzip=*/true);
  }
  quell::Dataset load(int64_t limit, uint64_t seed) const {
    quell::DataOptions opts;
    opts.name = "mnist";
    opts.dir = dir_.str();
    opts.limit = limit;
    opts.shuffle_seed = seed;
    opts.normalise = false;
    return quell::load_dataset(opts);
  }
  ScratchDir dir_;
};

TEST_F(LimitAndShuffle, LimitKeepsFirstSamplesInFileOrder) {
  const auto all = load(0, 0);
  EXPECT_EQ(all.size(), kN);
  EXPECT_TRUE(torch::equal(decode_index(all), torch::arange(kN)));
  const auto five = load(5, 0);
  EXPECT_EQ(five.size(), 5);
  EXPECT_EQ(five.inputs.sizes(), torch::IntArrayRef({5, 1, 4, 4}));
  EXPECT_TRUE(five.inputs.is_contiguous());
  EXPECT_TRUE(torch::equal(decode_index(five), torch::arange(5)));
  EXPECT_EQ(load(kN + 1000, 0).size(), kN);
}

TEST_F(LimitAndShuffle, SeededShuffleIsAReproduciblePermutationKeepingPairs) {
  const auto a = load(0, 42);
  const auto b = load(0, 42);
  const auto c = load(0, 43);
  const auto ia = decode_index(a);
  EXPECT_TRUE(torch::equal(ia, decode_index(b)));
  EXPECT_FALSE(torch::equal(ia, decode_index(c)));
  EXPECT_FALSE(torch::equal(ia, torch::arange(kN)));
  EXPECT_TRUE(torch::equal(std::get<0>(ia.sort()), torch::arange(kN)));
  // Labels travel with their images: sample i was written with label i % 10.
  EXPECT_TRUE(torch::equal(a.targets, ia.remainder(10)));
  EXPECT_TRUE(torch::equal(c.targets, decode_index(c).remainder(10)));
  EXPECT_TRUE(a.inputs.is_contiguous());
}

TEST_F(LimitAndShuffle, LimitAppliesAfterShuffle) {
  const auto full = load(0, 7);
  const auto cut = load(20, 7);
  EXPECT_EQ(cut.size(), 20);
  EXPECT_TRUE(torch::equal(decode_index(cut), decode_index(full).narrow(0, 0, 20)));
  EXPECT_TRUE(torch::equal(cut.targets, full.targets.narrow(0, 0, 20)));
}

// ---------------------------------------------------------------------------------------------
// default_data_dir

/// Sets or clears QUELL_DATA_DIR for one scope and restores the previous value.
class ScopedDataDirEnv {
 public:
  explicit ScopedDataDirEnv(const char* value) {
    if (const char* old = std::getenv("QUELL_DATA_DIR")) old_ = old;
    if (value) {
      ::setenv("QUELL_DATA_DIR", value, 1);
    } else {
      ::unsetenv("QUELL_DATA_DIR");
    }
  }
  ~ScopedDataDirEnv() {
    if (old_) {
      ::setenv("QUELL_DATA_DIR", old_->c_str(), 1);
    } else {
      ::unsetenv("QUELL_DATA_DIR");
    }
  }
  ScopedDataDirEnv(const ScopedDataDirEnv&) = delete;
  ScopedDataDirEnv& operator=(const ScopedDataDirEnv&) = delete;

 private:
  std::optional<std::string> old_;
};

TEST(DefaultDataDir, WithoutEnvironment) {
  ScopedDataDirEnv env(nullptr);
  EXPECT_EQ(quell::default_data_dir("fashion-mnist"), "/usr/share/datasets/fashion-mnist");
  EXPECT_EQ(quell::default_data_dir("mnist"), "data/mnist");
  EXPECT_EQ(quell::default_data_dir("cifar10"), "data/cifar10");
}

TEST(DefaultDataDir, EmptyEnvironmentIsIgnored) {
  ScopedDataDirEnv env("");
  EXPECT_EQ(quell::default_data_dir("fashion-mnist"), "/usr/share/datasets/fashion-mnist");
  EXPECT_EQ(quell::default_data_dir("cifar100"), "data/cifar100");
}

TEST(DefaultDataDir, EnvironmentOverridesEveryDataset) {
  ScopedDataDirEnv env("/srv/quell-data");
  EXPECT_EQ(quell::default_data_dir("fashion-mnist"), "/srv/quell-data/fashion-mnist");
  EXPECT_EQ(quell::default_data_dir("cifar10"), "/srv/quell-data/cifar10");
}

TEST(DefaultDataDir, LoadDatasetUsesItWhenDirIsEmpty) {
  ScratchDir dir;
  const auto [images, labels] = indexed_idx_data(30);
  fs::create_directories(dir.file("mnist"));
  quell::write_idx_images(dir.file("mnist/t10k-images-idx3-ubyte.gz"), images, true);
  quell::write_idx_labels(dir.file("mnist/t10k-labels-idx1-ubyte.gz"), labels, true);
  ScopedDataDirEnv env(dir.str().c_str());
  quell::DataOptions opts;
  opts.name = "mnist";
  opts.split = quell::Split::kTest;
  EXPECT_EQ(quell::load_dataset(opts).size(), 30);
}

// ---------------------------------------------------------------------------------------------
// Synthetic data

TEST(Synthetic, WritesFourLoadableBalancedFiles) {
  ScratchDir dir;
  const std::string sub = dir.file("nested/synthetic");  // created on demand
  quell::write_synthetic_idx(sub, 200, 100, /*seed=*/5);
  for (const char* f : {"train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                        "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"}) {
    EXPECT_TRUE(fs::exists(fs::path(sub) / f)) << f;
  }
  quell::DataOptions opts;
  opts.name = "fashion-mnist";
  opts.dir = sub;
  const auto train = quell::load_dataset(opts);
  EXPECT_EQ(train.size(), 200);
  EXPECT_EQ(train.sample_shape(), (std::vector<int64_t>{1, 28, 28}));
  EXPECT_TRUE(torch::equal(torch::bincount(train.targets), torch::full({10}, 20, torch::kLong)));
  opts.split = quell::Split::kTest;
  EXPECT_EQ(quell::load_dataset(opts).size(), 100);

  // Same seed, same files; raw variant readable too.
  const std::string raw = dir.file("raw");
  quell::write_synthetic_idx(raw, 200, 100, /*seed=*/5, /*gzip=*/false);
  EXPECT_TRUE(fs::exists(fs::path(raw) / "t10k-labels-idx1-ubyte"));
  EXPECT_TRUE(torch::equal(quell::read_idx_images(raw + "/train-images-idx3-ubyte"),
                           quell::read_idx_images(sub + "/train-images-idx3-ubyte.gz")));
  const std::string other = dir.file("other");
  quell::write_synthetic_idx(other, 200, 100, /*seed=*/6);
  EXPECT_FALSE(torch::equal(quell::read_idx_images(other + "/train-images-idx3-ubyte.gz"),
                            quell::read_idx_images(sub + "/train-images-idx3-ubyte.gz")));
}

TEST(Synthetic, SmallMlpLearnsItInOneEpoch) {
  ScratchDir dir;
  quell::write_synthetic_idx(dir.str(), 2000, 500, /*seed=*/11);
  quell::DataOptions opts;
  opts.name = "fashion-mnist";
  opts.dir = dir.str();
  const auto train = quell::load_dataset(opts);
  opts.split = quell::Split::kTest;
  const auto test = quell::load_dataset(opts);

  torch::manual_seed(0);
  torch::nn::Sequential mlp(torch::nn::Flatten(), torch::nn::Linear(784, 64), torch::nn::ReLU(),
                            torch::nn::Linear(64, 10));
  torch::optim::Adam opt(mlp->parameters(), torch::optim::AdamOptions(/*lr=*/2e-3));
  constexpr int64_t kBatch = 32;
  for (int64_t start = 0; start < train.size(); start += kBatch) {
    const int64_t len = std::min(kBatch, train.size() - start);
    const auto loss = torch::nn::functional::cross_entropy(
        mlp->forward(train.inputs.narrow(0, start, len)), train.targets.narrow(0, start, len));
    opt.zero_grad();
    loss.backward();
    opt.step();
  }
  torch::NoGradGuard no_grad;
  const double accuracy =
      mlp->forward(test.inputs).argmax(1).eq(test.targets).to(torch::kDouble).mean().item<double>();
  EXPECT_GT(accuracy, 0.9);
}

// ---------------------------------------------------------------------------------------------
// The real data set, when installed

TEST(RealFashionMnist, TestSplitHas1000PerClass) {
  if (!fs::exists(fs::path(kRealFashionMnist) / "t10k-images-idx3-ubyte.gz") &&
      !fs::exists(fs::path(kRealFashionMnist) / "t10k-images-idx3-ubyte")) {
    GTEST_SKIP() << kRealFashionMnist << " is not installed";
  }
  quell::DataOptions opts;
  opts.name = "fashion-mnist";
  opts.dir = kRealFashionMnist;
  opts.split = quell::Split::kTest;
  const auto ds = quell::load_dataset(opts);
  EXPECT_EQ(ds.size(), 10000);
  EXPECT_EQ(ds.inputs.sizes(), torch::IntArrayRef({10000, 1, 28, 28}));
  EXPECT_EQ(ds.targets.min().item<int64_t>(), 0);
  EXPECT_EQ(ds.targets.max().item<int64_t>(), 9);
  EXPECT_TRUE(torch::equal(torch::bincount(ds.targets), torch::full({10}, 1000, torch::kLong)));
  // Normalised with the training-set constants, the test set has mean ~0 and std ~1.
  EXPECT_NEAR(ds.inputs.mean().item<double>(), 0.0, 0.05);
  EXPECT_NEAR(ds.inputs.std().item<double>(), 1.0, 0.05);
}

}  // namespace
