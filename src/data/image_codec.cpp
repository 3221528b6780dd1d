// Images one at a time: JPEG (libjpeg-turbo) and PNG (libpng) decoding and encoding, and
// torchvision's Resize + CenterCrop. Folders, parallel decoding and the cache are in
// image_folder.cpp. Every file error is a std::runtime_error of one line, "<path>: <problem>".
#include <png.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <csetjmp>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <sstream>
#include <stdexcept>

#include "quell/image_folder.h"

// jpeglib.h needs FILE and size_t declared before it.
#include <jerror.h>
#include <jpeglib.h>

namespace quell {
namespace {

constexpr uint8_t kJpegMagic[] = {0xFF, 0xD8, 0xFF};
constexpr uint8_t kPngMagic[] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
// libjpeg's DCT scaling decodes at M/8 of the stored size, M = 1..8 (down-scaling only).
constexpr int kDctScaleDenom = 8;
// Luminance from RGB, ITU-R BT.601 weights in 16-bit fixed point (0.299, 0.587, 0.114 * 65536,
// as Pillow's convert("L")), so gray PNGs of colour images match what torchvision users get.
constexpr uint32_t kLumaR = 19595, kLumaG = 38470, kLumaB = 7471;
// Larger decoded images are refused (a corrupt or hostile header could ask for terabytes).
constexpr uint64_t kMaxDecodedBytes = uint64_t{1} << 32;

[[noreturn]] void fail(const std::string& path, const std::string& problem) {
  throw std::runtime_error(path + ": " + problem);
}

struct FileCloser {
  void operator()(std::FILE* f) const { std::fclose(f); }
};
using FilePtr = std::unique_ptr<std::FILE, FileCloser>;

std::vector<uint8_t> read_whole_file(const std::string& path) {
  errno = 0;
  FilePtr f(std::fopen(path.c_str(), "rb"));
  if (!f) fail(path, std::string("cannot open: ") + std::strerror(errno ? errno : ENOENT));
  struct stat st {};
  std::vector<uint8_t> bytes;
  if (::fstat(::fileno(f.get()), &st) == 0 && st.st_size > 0) {
    bytes.resize(static_cast<size_t>(st.st_size));
    const size_t got = std::fread(bytes.data(), 1, bytes.size(), f.get());
    if (std::ferror(f.get())) fail(path, std::string("read error: ") + std::strerror(errno));
    bytes.resize(got);  // the file shrank while being read: the decoder reports the truncation
  }
  return bytes;
}

void write_whole_file(const std::string& path, const uint8_t* data, size_t size) {
  errno = 0;
  FilePtr f(std::fopen(path.c_str(), "wb"));
  if (!f) fail(path, std::string("cannot open for writing: ") + std::strerror(errno));
  if (size > 0 && std::fwrite(data, 1, size, f.get()) != size) {
    fail(path, std::string("write failed: ") + std::strerror(errno));
  }
  if (std::fclose(f.release()) != 0) {
    fail(path, std::string("write failed: ") + std::strerror(errno));
  }
}

bool starts_with(const uint8_t* data, size_t size, const uint8_t* magic, size_t magic_size) {
  return size >= magic_size && std::memcmp(data, magic, magic_size) == 0;
}

/// What the first bytes of a file that is neither JPEG nor PNG look like, for the error message.
std::string describe_unknown_format(const uint8_t* data, size_t size) {
  const auto is = [&](const char* magic) {
    return starts_with(data, size, reinterpret_cast<const uint8_t*>(magic), std::strlen(magic));
  };
  if (is("GIF8")) return "a GIF image";
  if (is("BM")) return "a BMP image";
  if (size >= 12 && is("RIFF") && std::memcmp(data + 8, "WEBP", 4) == 0) return "a WebP image";
  if (is("II*") || is("MM")) return "a TIFF image";
  std::string hex;
  char buf[8];
  for (size_t i = 0; i < std::min<size_t>(size, 4); ++i) {
    std::snprintf(buf, sizeof buf, "%s%02x", i ? " " : "", data[i]);
    hex += buf;
  }
  return "starts with bytes " + hex;
}

// ---------------------------------------------------------------------------------------------
// JPEG through libjpeg(-turbo). libjpeg reports errors by calling error_exit, which must not
// return: it longjmps back to run_libjpeg. Between setjmp and longjmp there are no C++ objects
// with destructors in that frame; everything C++ lives in the job, reached through a pointer.

struct JpegErrorManager {
  jpeg_error_mgr pub;  // first member: libjpeg's cinfo->err points here
  std::jmp_buf jump;
  char message[JMSG_LENGTH_MAX];
};

void jpeg_error_exit(j_common_ptr cinfo) {
  auto* err = reinterpret_cast<JpegErrorManager*>(cinfo->err);
  (*cinfo->err->format_message)(cinfo, err->message);
  std::longjmp(err->jump, 1);
}

void jpeg_emit_message(j_common_ptr cinfo, int level) {
  if (level >= 0) return;  // trace messages
  // libjpeg only warns on truncated data and fills the rest of the image with grey; a truncated
  // file is an error here, like Pillow's "image file is truncated".
  const int code = cinfo->err->msg_code;
  if (code == JWRN_JPEG_EOF || code == JWRN_HIT_MARKER) jpeg_error_exit(cinfo);
  cinfo->err->num_warnings++;  // other warnings (extraneous bytes, ...) leave the pixels intact
}

struct JpegJob {
  const uint8_t* data = nullptr;
  size_t size = 0;
  int64_t channels = 3;
  int64_t min_short_side = 0;
  std::vector<uint8_t> pixels;  // interleaved [h, w, channels]
  std::vector<JSAMPROW> rows;
  int64_t height = 0, width = 0, full_height = 0, full_width = 0;
  char message[JMSG_LENGTH_MAX] = {0};
};

/// Decodes job->data into job->pixels; false with job->message on error.
bool run_libjpeg(JpegJob* job) {
  jpeg_decompress_struct cinfo;
  JpegErrorManager err;
  cinfo.err = jpeg_std_error(&err.pub);
  err.pub.error_exit = jpeg_error_exit;
  err.pub.emit_message = jpeg_emit_message;
  if (setjmp(err.jump)) {
    std::memcpy(job->message, err.message, sizeof(job->message));
    jpeg_destroy_decompress(&cinfo);
    return false;
  }
  jpeg_create_decompress(&cinfo);
  jpeg_mem_src(&cinfo, job->data, static_cast<unsigned long>(job->size));
  jpeg_read_header(&cinfo, TRUE);
  if (cinfo.jpeg_color_space == JCS_CMYK || cinfo.jpeg_color_space == JCS_YCCK) {
    std::snprintf(job->message, sizeof(job->message), "CMYK JPEGs are not supported");
    jpeg_destroy_decompress(&cinfo);
    return false;
  }
  // libjpeg converts: Y of YCbCr is the ITU-R 601 luminance; gray is replicated to RGB.
  cinfo.out_color_space = job->channels == 1 ? JCS_GRAYSCALE : JCS_RGB;
  job->full_height = cinfo.image_height;
  job->full_width = cinfo.image_width;
  cinfo.scale_num = kDctScaleDenom;
  cinfo.scale_denom = kDctScaleDenom;
  if (job->min_short_side > 0) {
    // The smallest M/8 whose shorter side still reaches the target (M = 8 always does or the
    // image is smaller than the target anyway).
    for (int m = 1; m < kDctScaleDenom; ++m) {
      cinfo.scale_num = static_cast<unsigned int>(m);
      jpeg_calc_output_dimensions(&cinfo);
      if (std::min(cinfo.output_height, cinfo.output_width) >=
          static_cast<JDIMENSION>(job->min_short_side)) {
        break;
      }
      cinfo.scale_num = kDctScaleDenom;
    }
  }
  jpeg_start_decompress(&cinfo);
  const size_t stride = static_cast<size_t>(cinfo.output_width) * cinfo.output_components;
  if (static_cast<uint64_t>(stride) * cinfo.output_height > kMaxDecodedBytes) {
    std::snprintf(job->message, sizeof(job->message), "image of %ux%u is too large to decode",
                  cinfo.output_width, cinfo.output_height);
    jpeg_destroy_decompress(&cinfo);
    return false;
  }
  job->height = cinfo.output_height;
  job->width = cinfo.output_width;
  job->pixels.resize(stride * cinfo.output_height);
  job->rows.resize(cinfo.output_height);
  for (JDIMENSION y = 0; y < cinfo.output_height; ++y) {
    job->rows[y] = job->pixels.data() + y * stride;
  }
  while (cinfo.output_scanline < cinfo.output_height) {
    jpeg_read_scanlines(&cinfo, job->rows.data() + cinfo.output_scanline,
                        cinfo.output_height - cinfo.output_scanline);
  }
  jpeg_finish_decompress(&cinfo);
  jpeg_destroy_decompress(&cinfo);
  return true;
}

// ---------------------------------------------------------------------------------------------
// PNG through libpng, with the same setjmp discipline.

struct PngJob {
  const uint8_t* data = nullptr;
  size_t size = 0;
  size_t pos = 0;
  std::vector<uint8_t> pixels;  // interleaved [h, w, channels], channels 1 or 3
  std::vector<png_bytep> rows;
  int64_t height = 0, width = 0, channels = 0;
  char message[256] = {0};
};

void png_read_from_job(png_structp png, png_bytep out, png_size_t n) {
  auto* job = static_cast<PngJob*>(png_get_io_ptr(png));
  if (n > job->size - job->pos) png_error(png, "file is truncated");
  std::memcpy(out, job->data + job->pos, n);
  job->pos += n;
}

void png_on_error(png_structp png, png_const_charp message) {
  auto* job = static_cast<PngJob*>(png_get_error_ptr(png));
  std::snprintf(job->message, sizeof(job->message), "%s", message);
  png_longjmp(png, 1);
}

// Warnings concern ancillary chunks (bad gamma, CRC of text chunks): the pixels are intact.
void png_on_warning(png_structp, png_const_charp) {}

bool run_libpng(PngJob* job) {
  png_structp png =
      png_create_read_struct(PNG_LIBPNG_VER_STRING, job, png_on_error, png_on_warning);
  if (png == nullptr) {
    std::snprintf(job->message, sizeof(job->message), "cannot initialise libpng");
    return false;
  }
  png_infop info = png_create_info_struct(png);
  if (info == nullptr) {
    png_destroy_read_struct(&png, nullptr, nullptr);
    std::snprintf(job->message, sizeof(job->message), "cannot initialise libpng");
    return false;
  }
  if (setjmp(png_jmpbuf(png))) {
    png_destroy_read_struct(&png, &info, nullptr);
    return false;
  }
  png_set_read_fn(png, job, png_read_from_job);
  png_read_info(png, info);
  const int color_type = png_get_color_type(png, info);
  const int bit_depth = png_get_bit_depth(png, info);
  // To 8-bit gray or RGB: palettes expanded, 1/2/4-bit gray widened, 16-bit samples scaled
  // (round(v * 255 / 65535)), alpha dropped (torchvision's convert("RGB") drops it too; the
  // tRNS chunk is not expanded into alpha at all).
  if (color_type == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
  if (color_type == PNG_COLOR_TYPE_GRAY && bit_depth < 8) png_set_expand_gray_1_2_4_to_8(png);
  if (bit_depth == 16) png_set_scale_16(png);
  if ((color_type & PNG_COLOR_MASK_ALPHA) != 0) png_set_strip_alpha(png);
  png_set_interlace_handling(png);
  png_read_update_info(png, info);
  job->height = png_get_image_height(png, info);
  job->width = png_get_image_width(png, info);
  job->channels = png_get_channels(png, info);
  const size_t stride = png_get_rowbytes(png, info);
  if (static_cast<uint64_t>(stride) * static_cast<uint64_t>(job->height) > kMaxDecodedBytes) {
    png_error(png, "image is too large to decode");
  }
  job->pixels.resize(stride * static_cast<size_t>(job->height));
  job->rows.resize(static_cast<size_t>(job->height));
  for (int64_t y = 0; y < job->height; ++y) job->rows[y] = job->pixels.data() + y * stride;
  png_read_image(png, job->rows.data());
  png_read_end(png, nullptr);  // up to IEND: a file cut after the pixel data is still truncated
  png_destroy_read_struct(&png, &info, nullptr);
  return true;
}

/// Interleaved [h, w, src_channels] uint8 -> [channels, h, w]: planes split, gray replicated to
/// RGB, RGB reduced to ITU-R 601 luminance.
torch::Tensor to_planes(const uint8_t* hwc, int64_t h, int64_t w, int64_t src_channels,
                        int64_t channels) {
  auto out = torch::empty({channels, h, w}, torch::kUInt8);
  uint8_t* dst = out.data_ptr<uint8_t>();
  const int64_t plane = h * w;
  if (src_channels == channels) {
    for (int64_t p = 0; p < plane; ++p) {
      for (int64_t c = 0; c < channels; ++c) dst[c * plane + p] = hwc[p * channels + c];
    }
  } else if (src_channels == 1) {  // gray -> RGB
    for (int64_t c = 0; c < channels; ++c) std::memcpy(dst + c * plane, hwc, plane);
  } else {  // RGB -> luminance
    for (int64_t p = 0; p < plane; ++p) {
      const uint8_t* px = hwc + p * 3;
      dst[p] =
          static_cast<uint8_t>((kLumaR * px[0] + kLumaG * px[1] + kLumaB * px[2] + 32768) >> 16);
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Encoders (tests, benchmarks).

struct PngWriteJob {
  const std::vector<png_bytep>* rows = nullptr;
  int64_t height = 0, width = 0;
  int color_type = 0, bit_depth = 8;
  std::vector<png_color> palette;
  std::vector<uint8_t> out;
  char message[256] = {0};
};

void png_write_to_job(png_structp png, png_bytep data, png_size_t n) {
  auto* job = static_cast<PngWriteJob*>(png_get_io_ptr(png));
  job->out.insert(job->out.end(), data, data + n);
}

void png_flush_job(png_structp) {}

void png_on_write_error(png_structp png, png_const_charp message) {
  auto* job = static_cast<PngWriteJob*>(png_get_error_ptr(png));
  std::snprintf(job->message, sizeof(job->message), "%s", message);
  png_longjmp(png, 1);
}

bool run_png_writer(PngWriteJob* job) {
  png_structp png =
      png_create_write_struct(PNG_LIBPNG_VER_STRING, job, png_on_write_error, png_on_warning);
  if (png == nullptr) return false;
  png_infop info = png_create_info_struct(png);
  if (info == nullptr || setjmp(png_jmpbuf(png))) {
    png_destroy_write_struct(&png, &info);
    return false;
  }
  png_set_write_fn(png, job, png_write_to_job, png_flush_job);
  png_set_IHDR(png, info, static_cast<png_uint_32>(job->width),
               static_cast<png_uint_32>(job->height), job->bit_depth, job->color_type,
               PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  if (!job->palette.empty()) {
    png_set_PLTE(png, info, job->palette.data(), static_cast<int>(job->palette.size()));
  }
  png_write_info(png, info);
  png_write_image(png, const_cast<png_bytepp>(job->rows->data()));
  png_write_end(png, nullptr);
  png_destroy_write_struct(&png, &info);
  return true;
}

struct JpegWriteJob {
  const uint8_t* hwc = nullptr;
  int64_t height = 0, width = 0, channels = 0;
  int quality = 95;
  unsigned char* out = nullptr;  // malloc'ed by libjpeg's memory destination
  unsigned long out_size = 0;
  char message[JMSG_LENGTH_MAX] = {0};
};

bool run_jpeg_writer(JpegWriteJob* job) {
  jpeg_compress_struct cinfo;
  JpegErrorManager err;
  cinfo.err = jpeg_std_error(&err.pub);
  err.pub.error_exit = jpeg_error_exit;
  if (setjmp(err.jump)) {
    std::memcpy(job->message, err.message, sizeof(job->message));
    jpeg_destroy_compress(&cinfo);
    return false;
  }
  jpeg_create_compress(&cinfo);
  jpeg_mem_dest(&cinfo, &job->out, &job->out_size);
  cinfo.image_width = static_cast<JDIMENSION>(job->width);
  cinfo.image_height = static_cast<JDIMENSION>(job->height);
  cinfo.input_components = static_cast<int>(job->channels);
  cinfo.in_color_space = job->channels == 1 ? JCS_GRAYSCALE : JCS_RGB;
  jpeg_set_defaults(&cinfo);
  jpeg_set_quality(&cinfo, job->quality, TRUE);
  jpeg_start_compress(&cinfo, TRUE);
  const size_t stride = static_cast<size_t>(job->width * job->channels);
  while (cinfo.next_scanline < cinfo.image_height) {
    JSAMPROW row = const_cast<JSAMPROW>(job->hwc + cinfo.next_scanline * stride);
    jpeg_write_scanlines(&cinfo, &row, 1);
  }
  jpeg_finish_compress(&cinfo);
  jpeg_destroy_compress(&cinfo);
  return true;
}

std::string shape_str(const torch::Tensor& t) {
  std::ostringstream os;
  os << t.sizes();
  return os.str();
}

}  // namespace

void ImageGeometry::validate() const {
  if (channels != 1 && channels != 3) {
    throw std::invalid_argument("image channels must be 1 (gray) or 3 (RGB), got " +
                                std::to_string(channels));
  }
  if (height <= 0 || width <= 0) {
    throw std::invalid_argument("image size must be positive, got " + std::to_string(height) + "x" +
                                std::to_string(width));
  }
  if (resize < 0 || (resize > 0 && resize < std::max(height, width))) {
    throw std::invalid_argument("image resize " + std::to_string(resize) +
                                " is smaller than the crop " + std::to_string(height) + "x" +
                                std::to_string(width) +
                                ": the shorter side must be >= max(height, width), or 0 for "
                                "just that");
  }
}

DecodedImage decode_image(const uint8_t* data, size_t size, const std::string& name,
                          int64_t channels, int64_t min_short_side) {
  if (channels != 1 && channels != 3) {
    throw std::invalid_argument("decode_image: channels must be 1 or 3, got " +
                                std::to_string(channels));
  }
  if (size == 0) fail(name, "empty file, expected a JPEG or PNG image");
  DecodedImage result;
  if (starts_with(data, size, kJpegMagic, sizeof kJpegMagic)) {
    JpegJob job;
    job.data = data;
    job.size = size;
    job.channels = channels;
    job.min_short_side = min_short_side;
    if (!run_libjpeg(&job)) fail(name, std::string("not a readable JPEG (") + job.message + ")");
    result.pixels = to_planes(job.pixels.data(), job.height, job.width, channels, channels);
    result.full_height = job.full_height;
    result.full_width = job.full_width;
  } else if (starts_with(data, size, kPngMagic, sizeof kPngMagic)) {
    PngJob job;
    job.data = data;
    job.size = size;
    if (!run_libpng(&job)) fail(name, std::string("not a readable PNG (") + job.message + ")");
    result.pixels = to_planes(job.pixels.data(), job.height, job.width, job.channels, channels);
    result.full_height = job.height;
    result.full_width = job.width;
  } else {
    fail(name, "not a JPEG or PNG image (" + describe_unknown_format(data, size) + ")");
  }
  return result;
}

DecodedImage decode_image_file(const std::string& path, int64_t channels, int64_t min_short_side) {
  const std::vector<uint8_t> bytes = read_whole_file(path);
  return decode_image(bytes.data(), bytes.size(), path, channels, min_short_side);
}

torch::Tensor resize_center_crop(const torch::Tensor& image, const ImageGeometry& geometry,
                                 int64_t full_height, int64_t full_width) {
  geometry.validate();
  TORCH_CHECK(image.dim() == 3 && image.scalar_type() == torch::kUInt8,
              "resize_center_crop: image must be [C, H, W] uint8, got ", shape_str(image), " ",
              image.scalar_type());
  const int64_t h = image.size(1), w = image.size(2);
  TORCH_CHECK(h > 0 && w > 0, "resize_center_crop: empty image ", shape_str(image));
  if (full_height <= 0 || full_width <= 0) {
    full_height = h;
    full_width = w;
  }
  // torchvision Resize(int): the shorter side becomes `target`, the longer int(target * long /
  // short), computed from the stored size so DCT-scaled decodes keep the same geometry.
  const int64_t target = geometry.resize_target();
  int64_t new_h = target, new_w = target;
  if (full_height <= full_width) {
    new_w = target * full_width / full_height;
  } else {
    new_h = target * full_height / full_width;
  }
  torch::Tensor resized = image;
  if (new_h != h || new_w != w) {
    namespace F = torch::nn::functional;
    // As torchvision on uint8 tensors: in float, antialiased when shrinking, rounded back.
    resized = F::interpolate(image.unsqueeze(0).to(torch::kFloat),
                             F::InterpolateFuncOptions()
                                 .size(std::vector<int64_t>{new_h, new_w})
                                 .mode(torch::kBilinear)
                                 .align_corners(false)
                                 .antialias(true))
                  .squeeze(0)
                  .round_()
                  .clamp_(0, 255)
                  .to(torch::kUInt8);
  }
  // torchvision CenterCrop: offset int(round((side - crop) / 2.0)); Python rounds half to even,
  // as std::nearbyint does in the default rounding mode.
  const auto offset = [](int64_t side, int64_t crop) {
    return static_cast<int64_t>(std::nearbyint(static_cast<double>(side - crop) / 2.0));
  };
  return resized.narrow(1, offset(new_h, geometry.height), geometry.height)
      .narrow(2, offset(new_w, geometry.width), geometry.width)
      .contiguous();
}

torch::Tensor load_image(const std::string& path, const ImageGeometry& geometry) {
  const DecodedImage decoded = decode_image_file(
      path, geometry.channels, geometry.dct_scaling ? geometry.resize_target() : 0);
  return resize_center_crop(decoded.pixels, geometry, decoded.full_height, decoded.full_width);
}

void write_png(const std::string& path, const torch::Tensor& image, bool palette) {
  TORCH_CHECK(image.dim() == 3 && image.size(0) >= 1 && image.size(0) <= 4,
              "write_png: image must be [C, H, W] with C in 1..4, got ", shape_str(image));
  const bool wide = image.scalar_type() == torch::kInt;
  TORCH_CHECK(image.scalar_type() == torch::kUInt8 || wide,
              "write_png: samples must be uint8 (8-bit) or int32 (16-bit), got ",
              image.scalar_type());
  TORCH_CHECK(!wide || (image.min().item<int>() >= 0 && image.max().item<int>() <= 65535),
              "write_png: 16-bit samples must lie in [0, 65535]");
  TORCH_CHECK(!palette || (image.size(0) == 3 && !wide),
              "write_png: a palette image must be [3, H, W] uint8");
  const int64_t c = image.size(0), h = image.size(1), w = image.size(2);
  const auto hwc = image.permute({1, 2, 0}).contiguous();
  PngWriteJob job;
  job.height = h;
  job.width = w;
  std::vector<uint8_t> samples;  // the rows as libpng wants them: big-endian 16-bit, or indices
  if (palette) {
    std::map<uint32_t, uint8_t> index;
    const uint8_t* px = hwc.data_ptr<uint8_t>();
    samples.resize(static_cast<size_t>(h * w));
    for (int64_t p = 0; p < h * w; ++p) {
      const uint32_t rgb =
          (uint32_t{px[3 * p]} << 16) | (uint32_t{px[3 * p + 1]} << 8) | px[3 * p + 2];
      auto it = index.find(rgb);
      if (it == index.end()) {
        TORCH_CHECK(index.size() < 256, "write_png: a palette image has at most 256 colours");
        it = index.emplace(rgb, static_cast<uint8_t>(index.size())).first;
        job.palette.push_back(png_color{px[3 * p], px[3 * p + 1], px[3 * p + 2]});
      }
      samples[p] = it->second;
    }
    job.color_type = PNG_COLOR_TYPE_PALETTE;
  } else {
    static const int kColorTypes[] = {PNG_COLOR_TYPE_GRAY, PNG_COLOR_TYPE_GRAY_ALPHA,
                                      PNG_COLOR_TYPE_RGB, PNG_COLOR_TYPE_RGB_ALPHA};
    job.color_type = kColorTypes[c - 1];
    if (wide) {
      job.bit_depth = 16;
      const int32_t* v = hwc.data_ptr<int32_t>();
      samples.resize(static_cast<size_t>(hwc.numel()) * 2);
      for (int64_t i = 0; i < hwc.numel(); ++i) {
        samples[2 * i] = static_cast<uint8_t>(v[i] >> 8);
        samples[2 * i + 1] = static_cast<uint8_t>(v[i] & 0xFF);
      }
    } else {
      samples.assign(hwc.data_ptr<uint8_t>(), hwc.data_ptr<uint8_t>() + hwc.numel());
    }
  }
  const size_t stride = samples.size() / static_cast<size_t>(h);
  std::vector<png_bytep> rows(static_cast<size_t>(h));
  for (int64_t y = 0; y < h; ++y) rows[y] = samples.data() + y * stride;
  job.rows = &rows;
  if (!run_png_writer(&job)) fail(path, std::string("cannot encode PNG (") + job.message + ")");
  write_whole_file(path, job.out.data(), job.out.size());
}

void write_jpeg(const std::string& path, const torch::Tensor& image, int quality) {
  TORCH_CHECK(image.dim() == 3 && (image.size(0) == 1 || image.size(0) == 3) &&
                  image.scalar_type() == torch::kUInt8,
              "write_jpeg: image must be [1 or 3, H, W] uint8, got ", shape_str(image));
  TORCH_CHECK(quality >= 1 && quality <= 100, "write_jpeg: quality must be in 1..100, got ",
              quality);
  const auto hwc = image.permute({1, 2, 0}).contiguous();
  JpegWriteJob job;
  job.hwc = hwc.data_ptr<uint8_t>();
  job.channels = image.size(0);
  job.height = image.size(1);
  job.width = image.size(2);
  job.quality = quality;
  const bool ok = run_jpeg_writer(&job);
  std::unique_ptr<unsigned char, decltype(&std::free)> out(job.out, &std::free);
  if (!ok) fail(path, std::string("cannot encode JPEG (") + job.message + ")");
  write_whole_file(path, out.get(), job.out_size);
}

}  // namespace quell
