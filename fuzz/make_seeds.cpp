// Seed corpora for the fuzz targets (fuzz/targets.h), written by the library's own writers and
// studies so that each seed is a real file of its format:
//   fuzz_seeds OUT_DIR [FASHION_MNIST_DIR]
// writes OUT_DIR/<target>/<seed>. Small on purpose (a few KB each) so the fuzzers run fast; the
// TorchScript seeds are the test fixtures, copied by scripts/fuzz.sh.
#include <filesystem>
#include <fstream>
#include <iostream>
#include <string>

#include "quell/checkpoint.h"
#include "quell/cost.h"
#include "quell/data.h"
#include "quell/denoise_study.h"
#include "quell/image_folder.h"
#include "quell/noise.h"
#include "quell/plan_study.h"
#include "quell/train_study.h"
#include "quell/walk_study.h"

namespace fs = std::filesystem;
using namespace quell;

namespace {

fs::path out_root;

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void seed(const std::string& target, const std::string& name, const std::string& bytes) {
  fs::create_directories(out_root / target);
  std::ofstream(out_root / target / name, std::ios::binary) << bytes;
}

void seed_file(const std::string& target, const std::string& name, const fs::path& file,
               const std::string& prefix = "") {
  seed(target, name, prefix + slurp(file));
}

// IDX seeds: the first few samples of a real file, raw (prefix 0/1) and gzipped by the target
// (prefix 2/3), and the gzipped file itself arriving raw.
void idx_seeds(const std::string& tag, const std::string& images, const std::string& labels,
               const fs::path& tmp) {
  const auto im = read_idx_images(images).slice(0, 0, 3).contiguous();
  const auto lb = read_idx_labels(labels).slice(0, 0, 3).contiguous();
  write_idx_images((tmp / "i").string(), im, false);
  write_idx_labels((tmp / "l").string(), lb, false);
  write_idx_images((tmp / "i.gz").string(), im, true);
  write_idx_labels((tmp / "l.gz").string(), lb, true);
  seed_file("idx", tag + "-images", tmp / "i", std::string(1, '\0'));
  seed_file("idx", tag + "-labels", tmp / "l", "\x01");
  seed_file("idx", tag + "-images-z", tmp / "i", "\x02");
  seed_file("idx", tag + "-labels-z", tmp / "l", "\x03");
  seed_file("idx", tag + "-images.gz", tmp / "i.gz", std::string(1, '\0'));
  seed_file("idx", tag + "-labels.gz", tmp / "l.gz", "\x01");
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::cerr << "usage: fuzz_seeds OUT_DIR [FASHION_MNIST_DIR]\n";
    return 2;
  }
  out_root = argv[1];
  const fs::path tmp = out_root / ".tmp";
  fs::create_directories(tmp);
  torch::manual_seed(1);

  // ---- IDX: synthetic Fashion-MNIST layout, and the real Fashion-MNIST when installed.
  const fs::path syn = tmp / "synthetic";
  write_synthetic_idx(syn.string(), 400, 200, 7, true);
  idx_seeds("synthetic", (syn / "t10k-images-idx3-ubyte.gz").string(),
            (syn / "t10k-labels-idx1-ubyte.gz").string(), tmp);
  torch::Tensor real_images;
  if (argc > 2 && fs::exists(fs::path(argv[2]) / "t10k-images-idx3-ubyte.gz")) {
    const fs::path f = argv[2];
    idx_seeds("fashion", (f / "t10k-images-idx3-ubyte.gz").string(),
              (f / "t10k-labels-idx1-ubyte.gz").string(), tmp);
    real_images = read_idx_images((f / "t10k-images-idx3-ubyte.gz").string()).slice(0, 0, 2);
  } else {
    real_images = read_idx_images((syn / "t10k-images-idx3-ubyte.gz").string()).slice(0, 0, 2);
  }

  // ---- CIFAR binary: three records, CIFAR-10 (prefix 0) and CIFAR-100 (prefix 1).
  {
    const auto im = torch::randint(0, 256, {3, 3, 32, 32}, torch::kUInt8);
    write_cifar_bin((tmp / "c10").string(), im, torch::tensor({1, 9, 0}, torch::kInt64), 1);
    write_cifar_bin((tmp / "c100").string(), im, torch::tensor({5, 99, 0}, torch::kInt64), 2);
    seed_file("cifar", "cifar10", tmp / "c10", std::string(1, '\0'));
    seed_file("cifar", "cifar100", tmp / "c100", "\x01");
  }

  // ---- Images: a Fashion-MNIST image as every PNG colour type and bit depth, and as JPEG.
  {
    const auto gray = real_images[0].contiguous();  // [1, 28, 28]
    const auto rgb = torch::cat({gray, 255 - gray, (gray / 2).to(torch::kUInt8)}, 0).contiguous();
    const auto small = rgb.slice(1, 3, 10).slice(2, 5, 17).contiguous();  // 7 x 12
    const std::string geom_a("\x01\x10\x10\x80", 4), geom_b("\x02\x1b\x09\x03", 4);
    auto png = [&](const std::string& name, const torch::Tensor& t, bool palette = false) {
      write_png((tmp / "x.png").string(), t, palette);
      seed_file("image", name + "-a", tmp / "x.png", geom_a);
      seed_file("image", name + "-b", tmp / "x.png", geom_b);
    };
    png("gray.png", gray);
    png("gray-alpha.png", torch::cat({gray, gray}, 0));
    png("rgb.png", rgb);
    png("rgba.png", torch::cat({rgb, gray}, 0));
    png("palette.png", ((rgb / 64).floor() * 64).to(torch::kUInt8), true);
    png("gray16.png", gray.to(torch::kInt32) * 257);
    png("small.png", small);
    for (int q : {50, 95}) {
      write_jpeg((tmp / "x.jpg").string(), gray, q);
      seed_file("image", "gray" + std::to_string(q) + ".jpg", tmp / "x.jpg", geom_a);
      write_jpeg((tmp / "x.jpg").string(), rgb, q);
      seed_file("image", "rgb" + std::to_string(q) + ".jpg", tmp / "x.jpg", geom_b);
    }
    write_jpeg((tmp / "x.jpg").string(), small, 90);
    seed_file("image", "small.jpg", tmp / "x.jpg", geom_a);
  }

  // ---- Noise rules (the CLI's --noise/--adc/--repeat/--weight-noise grammar) and JSON configs.
  const std::vector<std::string> rule_seeds = {
      "all\nall=add:0.1:rel=std",
      "conv1,conv2\nconv1,conv2=mul:0.1:static+add:0.05\nadc all=8\nrepeat conv1=4",
      "0-3\n1-4=add:0.25:static:rel=std+add:0.125:rel=std\nweight 0.05:range:mul",
      "1\nall=muladd:0.3/0.25:rel=std\n3-5=add:0.1:aging:age=4:nu=1\nspec mul:0.1:aging:ref=2\ngrid 1e-2:1e4\nwalk addmul:r=0.3:rel=range",
      "fc1\nfc1=add:0.5:rel=range\ngrid 0:2:0.1\nwalk add:static\nblock bottleneck:4",
      "all\nweight 0.02\nadc 0-15=4\nrepeat all=2\ngrid 0.1,0.3,1\nblock mlp",
  };
  int n = 0;
  for (const auto& s : rule_seeds) seed("noise_rules", "rules" + std::to_string(n++), s);
  const auto lenet_names = make_model(ModelSpec{})->site_names();
  n = 0;
  for (const auto& s : rule_seeds) {
    std::vector<std::string> noise;
    std::vector<std::string> adc, rep;
    std::string weight;
    std::istringstream in(s);
    std::string line;
    std::getline(in, line);
    while (std::getline(in, line)) {
      if (line.rfind("adc ", 0) == 0) adc.push_back(line.substr(4));
      else if (line.rfind("repeat ", 0) == 0) rep.push_back(line.substr(7));
      else if (line.rfind("weight ", 0) == 0) weight = line.substr(7);
      else if (line.find('=') != std::string::npos && line.find(' ') == std::string::npos)
        noise.push_back(line);
    }
    const auto c = build_noise_config(noise, adc, rep, weight, 7, lenet_names);
    seed("noise_json", "config" + std::to_string(n++) + ".json", c.to_json(lenet_names).dump(2));
  }
  seed("noise_json", "rules.json",
       R"({"seed": 3, "weight_noise": {"kind": "add", "sigma": 0.05, "scale": "std"},)"
       R"( "rules": [{"sites": "all", "noise": [{"kind": "add", "sigma": 0.1}], "adc_bits": 8},)"
       R"( {"sites": "conv1,2-4", "repeats": 2}]})");

  // ---- A small trained model; its checkpoint; a walk, a denoise and a plan study on it.
  DataOptions d;
  d.name = "fashion-mnist";
  d.dir = syn.string();
  const Dataset train = load_dataset(d);
  d.split = Split::kTest;
  const Dataset test = load_dataset(d);
  Model model = make_model(ModelSpec::for_dataset("mlp", train));
  TrainStudyOptions to;
  to.train.epochs = 1;
  to.data.name = "fashion-mnist";
  to.out = (tmp / "mlp.pt").string();
  run_train_study(model, train, &test, to);
  seed_file("checkpoint", "mlp.pt", tmp / "mlp.pt");
  {
    ModelSpec tiny;
    tiny.name = "lenet5";
    Model m = make_model(tiny);
    CheckpointMeta meta;
    meta.spec = tiny;
    meta.dataset = "fashion-mnist";
    save_checkpoint((tmp / "lenet5.pt").string(), *m, meta);
    seed_file("checkpoint", "lenet5-untrained.pt", tmp / "lenet5.pt");
  }

  const NoiseConfig noise = build_noise_config({"all=add:0.5:rel=std"}, {}, {}, "", 1,
                                               model->site_names());
  WalkStudyOptions w;
  w.out = (tmp / "walk").string();
  w.figures = {false, false};
  w.sites = "1,2";
  w.walk.grid = SigmaGrid::parse("0.1:10", 2);
  w.walk.noise = WalkNoise::parse("add");
  w.walk.repeats = 2;
  w.data.name = "fashion-mnist";
  run_walk_study(model, test, w);
  seed_file("reports", "walk.json", tmp / "walk" / "walk.json");
  const std::string wj = slurp(tmp / "walk" / "journal.jsonl");
  seed("walk_journal", "journal.jsonl", wj);
  seed("walk_journal", "torn.jsonl", wj.substr(0, wj.size() - 7));

  DenoiseStudyOptions dn;
  dn.noise = noise;
  dn.sites = "1,3";
  dn.ratios = {4};
  dn.budgets = {60};
  dn.val_size = 100;
  dn.search_limit = 100;
  dn.taylor_samples = 100;
  dn.train.epochs = 1;
  dn.eval.draws = 2;
  dn.eval.chips = 1;
  dn.robustness_levels = {0.0, 1.0};
  dn.out = (tmp / "denoise").string();
  dn.figures = {false, false};
  dn.source = "fuzz seeds";
  run_denoise_study(model, train, test, dn);
  seed_file("reports", "denoise-report.json", tmp / "denoise" / "report.json");
  const std::string dj = slurp(tmp / "denoise" / "journal.jsonl");
  seed("study_journal", "denoise.jsonl", dj);
  seed("study_journal", "denoise-torn.jsonl", dj.substr(0, dj.size() - 5));

  PlanStudyOptions p;
  p.noise = noise;
  p.sites = "1-3";
  p.mean_repeats = {2};
  p.search = "none";
  p.val_size = 100;
  p.eval.draws = 2;
  p.hardware = load_hardware_config("isaac");
  p.denoise_report = (tmp / "denoise" / "report.json").string();
  p.out = (tmp / "plan").string();
  p.figures = {false, false};
  run_plan_study(model, train, test, p);
  seed_file("reports", "plan.json", tmp / "plan" / "plan.json");
  if (fs::exists(tmp / "plan" / "journal.jsonl")) {
    seed_file("study_journal", "plan.jsonl", tmp / "plan" / "journal.jsonl");
  }

  fs::remove_all(tmp);
  std::cout << "fuzz_seeds: wrote seeds into " << out_root.string() << "\n";
  return 0;
}
