#include "demo_model.h"

#include <cstdio>
#include <filesystem>

#include "bench_paths.h"  // QUELL_SOURCE_DIR
#include "quell/checkpoint.h"
#include "quell/data.h"
#include "quell/train.h"

namespace quell::bench {

Model demo_lenet5_bn(const std::string& checkpoint) {
  namespace fs = std::filesystem;
  std::string path = checkpoint;
  if (path.empty()) path = std::string(QUELL_SOURCE_DIR) + "/runs/demo/lenet5-bn.pt";
  if (!fs::exists(path) && checkpoint.empty()) {
    std::fprintf(stderr, "training lenet5-bn (5 epochs) into %s ...\n", path.c_str());
    DataOptions d;
    d.split = Split::kTrain;
    const Dataset train_set = load_dataset(d);
    torch::manual_seed(1);
    Model m = make_model(ModelSpec::for_dataset("lenet5-bn", train_set));
    TrainOptions o;
    o.epochs = 5;
    train(*m, train_set, o);
    fs::create_directories(fs::path(path).parent_path());
    CheckpointMeta meta;
    meta.spec = m->spec();
    meta.dataset = train_set.name;
    save_checkpoint(path, *m, meta);
  }
  std::fprintf(stderr, "checkpoint %s\n", path.c_str());
  return load_checkpoint(path);
}

}  // namespace quell::bench
