// MPI wrapper (docs/mpi.md): single-process fallbacks when built without MPI or not launched by
// an MPI launcher.
#include "quell/dist.h"

#include <cstdlib>
#include <stdexcept>

#include "quell/build_config.h"

#if QUELL_WITH_MPI
#include <mpi.h>
#endif

namespace quell::dist {
namespace {

[[maybe_unused]] bool g_active = false;  // MPI_Init was called by us, MPI_Finalize not yet
int g_rank = 0;
int g_size = 1;
int g_local_size = 1;

#if QUELL_WITH_MPI
bool launched_by_mpi() {
  for (const char* v : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "PMI_RANK",
                        "MPI_LOCALNRANKS"}) {
    if (std::getenv(v)) return true;
  }
  return false;
}

void check(int rc, const char* what) {
  if (rc != MPI_SUCCESS) throw std::runtime_error(std::string("MPI: ") + what + " failed");
}
#endif

}  // namespace

bool built_with_mpi() { return QUELL_WITH_MPI != 0; }

void init(int* argc, char*** argv) {
#if QUELL_WITH_MPI
  if (g_active || !launched_by_mpi()) return;
  int provided = 0;
  check(MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided), "MPI_Init_thread");
  g_active = true;
  MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
  MPI_Comm_size(MPI_COMM_WORLD, &g_size);
  // Errors come back as codes (turned into exceptions), so a rank can report before aborting.
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  MPI_Comm local;
  if (MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, g_rank, MPI_INFO_NULL, &local) ==
      MPI_SUCCESS) {
    MPI_Comm_size(local, &g_local_size);
    MPI_Comm_free(&local);
  }
#else
  (void)argc;
  (void)argv;
#endif
}

void finalize() {
#if QUELL_WITH_MPI
  if (!g_active) return;
  g_active = false;
  MPI_Finalize();
#endif
}

void abort(int code) {
#if QUELL_WITH_MPI
  if (g_active && g_size > 1) MPI_Abort(MPI_COMM_WORLD, code);
#endif
  std::exit(code);
}

int rank() { return g_rank; }
int size() { return g_size; }
int local_size() { return g_local_size; }

void barrier() {
#if QUELL_WITH_MPI
  if (g_active && g_size > 1) check(MPI_Barrier(MPI_COMM_WORLD), "MPI_Barrier");
#endif
}

void allreduce_sum(torch::Tensor& t) {
  if (g_size == 1) return;
#if QUELL_WITH_MPI
  if (!t.is_contiguous() || t.device().type() != torch::kCPU) {
    throw std::invalid_argument("allreduce_sum: needs a contiguous CPU tensor");
  }
  MPI_Datatype type;
  if (t.scalar_type() == torch::kFloat) {
    type = MPI_FLOAT;
  } else if (t.scalar_type() == torch::kDouble) {
    type = MPI_DOUBLE;
  } else {
    throw std::invalid_argument("allreduce_sum: float or double tensors only");
  }
  check(MPI_Allreduce(MPI_IN_PLACE, t.data_ptr(), static_cast<int>(t.numel()), type, MPI_SUM,
                      MPI_COMM_WORLD),
        "MPI_Allreduce");
#endif
}

int64_t sum(int64_t value) {
  if (g_size == 1) return value;
#if QUELL_WITH_MPI
  int64_t out = 0;
  check(MPI_Allreduce(&value, &out, 1, MPI_INT64_T, MPI_SUM, MPI_COMM_WORLD), "MPI_Allreduce");
  return out;
#else
  return value;
#endif
}

std::string broadcast(const std::string& value) {
  if (g_size == 1) return value;
#if QUELL_WITH_MPI
  int64_t n = static_cast<int64_t>(value.size());
  check(MPI_Bcast(&n, 1, MPI_INT64_T, 0, MPI_COMM_WORLD), "MPI_Bcast");
  std::string out = g_rank == 0 ? value : std::string(static_cast<size_t>(n), '\0');
  check(MPI_Bcast(out.data(), static_cast<int>(n), MPI_CHAR, 0, MPI_COMM_WORLD), "MPI_Bcast");
  return out;
#else
  return value;
#endif
}

TaskCounter::TaskCounter() {
#if QUELL_WITH_MPI
  if (g_size > 1) {
    MPI_Win win;
    const MPI_Aint bytes = g_rank == 0 ? static_cast<MPI_Aint>(sizeof(int64_t)) : 0;
    check(MPI_Win_allocate(bytes, sizeof(int64_t), MPI_INFO_NULL, MPI_COMM_WORLD, &base_, &win),
          "MPI_Win_allocate");
    if (g_rank == 0) *base_ = 0;
    check(MPI_Barrier(MPI_COMM_WORLD), "MPI_Barrier");
    check(MPI_Win_lock_all(0, win), "MPI_Win_lock_all");
    window_ = new MPI_Win(win);
  }
#endif
}

TaskCounter::~TaskCounter() {
#if QUELL_WITH_MPI
  if (window_) {
    auto* win = static_cast<MPI_Win*>(window_);
    MPI_Win_unlock_all(*win);
    MPI_Win_free(win);  // collective: every rank has finished asking
    delete win;
  }
#endif
}

int64_t TaskCounter::next() {
#if QUELL_WITH_MPI
  if (window_) {
    auto* win = static_cast<MPI_Win*>(window_);
    const int64_t one = 1;
    int64_t got = 0;
    check(MPI_Fetch_and_op(&one, &got, MPI_INT64_T, 0, 0, MPI_SUM, *win), "MPI_Fetch_and_op");
    check(MPI_Win_flush(0, *win), "MPI_Win_flush");
    return got;
  }
#endif
  return local_++;
}

std::vector<std::vector<double>> share_rows(
    int64_t n, int64_t width, const std::function<std::vector<double>(int64_t)>& fn) {
  torch::Tensor packed = torch::zeros({n, width}, torch::kDouble);
  auto p = packed.accessor<double, 2>();
  const int ranks = size(), me = rank();
  for (int64_t i = 0; i < n; ++i) {
    if (static_cast<int>(i % ranks) != me) continue;
    const std::vector<double> row = fn(i);
    TORCH_INTERNAL_ASSERT(static_cast<int64_t>(row.size()) <= width, "share_rows: row too wide");
    for (size_t f = 0; f < row.size(); ++f) p[i][static_cast<int64_t>(f)] = row[f];
  }
  allreduce_sum(packed);
  p = packed.accessor<double, 2>();
  std::vector<std::vector<double>> rows(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    rows[static_cast<size_t>(i)].assign(&p[i][0], &p[i][0] + width);
  }
  return rows;
}

}  // namespace quell::dist
