// export_weights CHECKPOINT DIR: writes DIR/weights.{bin,json} for bench/walk_peer.py.
#include <iostream>

#include "export_weights.h"
#include "quell/checkpoint.h"

int main(int argc, char** argv) {
  if (argc != 3) {
    std::cerr << "usage: " << argv[0] << " CHECKPOINT DIR\n";
    return 2;
  }
  try {
    quell::Model model = quell::load_checkpoint(argv[1]);
    model->eval();
    quell::bench::export_weights(*model, argv[2]);
    std::cerr << "wrote " << argv[2] << "/weights.bin and weights.json (" << model->spec().name
              << ", " << model->named_parameters().size() << " parameters, "
              << model->named_buffers().size() << " buffers)\n";
  } catch (const std::exception& e) {
    std::cerr << "export_weights: error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
