// Image folders: a dataset from root/<class>/<image> with JPEG (libjpeg-turbo) and PNG (libpng)
// files, the ImageNet and torchvision ImageFolder layout. Images are decoded in parallel, resized
// and centre-cropped like torchvision's Resize + CenterCrop, and cached decoded (in memory for the
// process and on disk for the next run). Every file error is a one-line std::runtime_error
// "<path>: <problem>".
#pragma once

#include <torch/torch.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "quell/data.h"

namespace quell {

/// How images become model inputs: torchvision's Resize(resize) then CenterCrop(height, width).
struct ImageGeometry {
  int64_t channels = 3;  ///< 1 = luminance (ITU-R 601), 3 = RGB; alpha is dropped
  int64_t height = 0;    ///< crop height in pixels, > 0
  int64_t width = 0;     ///< crop width in pixels, > 0
  /// Shorter side after resizing, before the crop; 0 = max(height, width), just enough to crop.
  int64_t resize = 0;
  /// Decode large JPEGs directly at a reduced scale (libjpeg's DCT scaling, 1/8 .. 8/8), the
  /// smallest whose shorter side is still >= the resize target. Off = always decode full size.
  bool dct_scaling = true;

  /// The shorter side images are resized to: `resize`, or max(height, width) when it is 0.
  int64_t resize_target() const { return resize > 0 ? resize : std::max(height, width); }
  /// Throws std::invalid_argument naming the bad field (channels not 1 or 3, sizes <= 0, resize
  /// smaller than the crop).
  void validate() const;
};

/// A decoded image before resizing.
struct DecodedImage {
  torch::Tensor pixels;     ///< [C, h, w] uint8 (h, w may be reduced by DCT scaling)
  int64_t full_height = 0;  ///< height stored in the file
  int64_t full_width = 0;   ///< width stored in the file
};

/// Decodes a JPEG or PNG held in memory; the format is told by its magic bytes, not by a file
/// name. Gray, gray+alpha, RGB, RGBA, palette and 16-bit PNGs and gray or YCbCr JPEGs come out
/// with `channels` channels (1: luminance Y = 0.299 R + 0.587 G + 0.114 B; 3: RGB, gray
/// replicated); alpha is dropped, 16-bit samples are scaled to 8 bits. With min_short_side > 0 a
/// JPEG may be decoded at 1/8 .. 8/8 scale, the smallest whose shorter side is >= min_short_side.
/// Corrupt and truncated data (libjpeg's "Premature end of JPEG file" included) throw
/// std::runtime_error "<name>: <problem>"; never exits the process.
DecodedImage decode_image(const uint8_t* data, size_t size, const std::string& name,
                          int64_t channels, int64_t min_short_side = 0);

/// Reads and decodes the image file at `path` (see decode_image).
DecodedImage decode_image_file(const std::string& path, int64_t channels,
                               int64_t min_short_side = 0);

/// torchvision's Resize(resize) + CenterCrop(height, width) on image [C, h, w] uint8 (any
/// h, w): bilinear scaling so the shorter side becomes `resize` and the longer side
/// floor(resize * long / short) of `full_height` x `full_width` (the stored size, whose aspect
/// ratio is kept when `image` was DCT-scaled; 0 = image's own), antialiased when shrinking, then
/// the centre height x width, offset round((side - crop) / 2). Returns [C, height, width] uint8.
torch::Tensor resize_center_crop(const torch::Tensor& image, const ImageGeometry& geometry,
                                 int64_t full_height = 0, int64_t full_width = 0);

/// decode_image_file then resize_center_crop: one model input [C, height, width] uint8.
torch::Tensor load_image(const std::string& path, const ImageGeometry& geometry);

/// Images decoded by decode_images().
struct DecodedImages {
  torch::Tensor images;             ///< [N, C, H, W] uint8; rows of failed files are zero
  std::vector<std::string> errors;  ///< per file: "" if decoded, else "<path>: <problem>"
};

/// load_image() of every path, in parallel on torch::get_num_threads() threads; files are handed
/// out one at a time, so a few large images do not stall one thread. With stop_at_error the files
/// not yet started are abandoned after the first failure (their errors stay empty and their rows
/// zero).
DecodedImages decode_images(const std::vector<std::string>& paths, const ImageGeometry& geometry,
                            bool stop_at_error);

/// Writes image [C, H, W] (C = 1 gray, 2 gray+alpha, 3 RGB, 4 RGBA) as a PNG. uint8 samples are
/// written at 8 bits; int32 samples in [0, 65535] at 16 bits. With `palette` (C = 3, uint8, at
/// most 256 distinct colours) writes an indexed-colour PNG. Used by tests and benchmarks.
void write_png(const std::string& path, const torch::Tensor& image, bool palette = false);

/// Writes image [C, H, W] uint8 (C = 1 or 3) as a baseline JPEG of the given quality (1-100).
void write_jpeg(const std::string& path, const torch::Tensor& image, int quality = 95);

/// The files of an image folder: root/<class>/<file>.
struct ImageFolderIndex {
  std::string root;                  ///< absolute path
  std::vector<std::string> classes;  ///< sorted sub-folder names; label k = classes[k]
  std::vector<std::string> files;    ///< "<class>/<file>", sorted by class then file name
  std::vector<int64_t> labels;       ///< label of each file
  int64_t ignored = 0;               ///< non-image files skipped (hidden files are not counted)
};

/// Lists root/<class>/<file> with extension .jpg, .jpeg or .png (any case); classes are the
/// sorted non-hidden sub-folders (torchvision's convention, so labels match a model trained with
/// torchvision's ImageFolder). Throws std::runtime_error naming `root` if it is missing, has no
/// class folders or holds no images.
ImageFolderIndex scan_image_folder(const std::string& root);

/// The class folders of each split of an image dataset directory.
struct ImageSplits {
  std::string train;    ///< dir/train, or dir itself
  std::string test;     ///< dir/val, else dir/test, or dir itself
  bool shared = false;  ///< no train/val/test sub-folders: dir serves as both splits
};

/// Finds the splits of `dir`: dir/train is the train split; dir/val (else dir/test) the test
/// split; a dir with neither holds the class folders itself and serves as both. Throws
/// std::runtime_error naming `dir` if it is missing, or if only one of train and val/test exists.
ImageSplits find_image_splits(const std::string& dir);

/// Directory of the decoded-image cache: $QUELL_CACHE_DIR, else $XDG_CACHE_HOME/quell, else
/// $HOME/.cache/quell.
std::string image_cache_dir();

/// Drops the decoded images held in memory for this process (the disk cache stays).
void clear_image_memory_cache();

/// Loads an image-folder dataset (load_dataset() with name "images"): the split's files of
/// opts.dir (see find_image_splits), shuffled with opts.shuffle_seed and cut to opts.limit
/// before anything is decoded; decoded in parallel on torch::get_num_threads() threads;
/// resized and cropped to opts.channels x opts.height x opts.width; normalised with opts.mean
/// and opts.stddev, or when they are empty with per-channel statistics of the train split's
/// kept images (also when loading the test split). With opts.image_cache the decoded images
/// are kept in memory and on disk (image_cache_dir()). Unreadable images throw
/// "<path>: <problem>" unless opts.skip_bad, which leaves them out and lists them in
/// Dataset::skipped. Throws before decoding if the dataset would not fit in available memory.
Dataset load_image_folder(const DataOptions& opts);

}  // namespace quell
