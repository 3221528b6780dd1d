// Multi-process execution over MPI (docs/mpi.md). quell is built with MPI when one is found
// (QUELL_WITH_MPI); a process started by mpirun / srun joins the job, any other process is the
// single rank 0 of a job of size 1, and every function below works in both cases.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <functional>
#include <vector>
#include <string>

namespace quell::dist {

/// Whether this build has MPI.
bool built_with_mpi();
/// Joins the MPI job when the process was launched by an MPI launcher (Open MPI, PMI/PMIx
/// environment); otherwise does nothing. Call once, first thing in main.
void init(int* argc, char*** argv);
/// Leaves the MPI job (no-op without one). Safe to call more than once.
void finalize();
/// Ends every rank of the job with `code` (after an error on one rank, so none waits forever);
/// a plain exit without a job.
[[noreturn]] void abort(int code);

int rank();
int size();
/// Ranks on this machine (MPI_COMM_TYPE_SHARED); 1 without a job.
int local_size();
inline bool is_root() { return rank() == 0; }
void barrier();

/// Sums `t` over the ranks, in place (every rank gets the sum). A contiguous CPU float or
/// double tensor; a no-op with one rank.
void allreduce_sum(torch::Tensor& t);
/// Sums an integer over the ranks.
int64_t sum(int64_t value);
/// Rows of numbers computed once over the ranks: row i (`width` doubles) is computed by fn(i) on
/// rank i % size() alone, and every rank returns every row (one allreduce of the zero-filled
/// rest). With one process every row is computed here. Collective.
std::vector<std::vector<double>> share_rows(
    int64_t n, int64_t width, const std::function<std::vector<double>(int64_t)>& fn);
/// Rank 0's `value` on every rank.
std::string broadcast(const std::string& value);

/// Dynamic work distribution: next() hands out 0, 1, 2, ... across all ranks, each number to
/// exactly one rank, in the order the ranks ask (an atomic counter on rank 0, MPI one-sided
/// fetch-and-add). Collective: every rank constructs and destroys it together.
class TaskCounter {
 public:
  TaskCounter();
  ~TaskCounter();
  TaskCounter(const TaskCounter&) = delete;
  TaskCounter& operator=(const TaskCounter&) = delete;
  int64_t next();

 private:
  int64_t local_ = 0;  ///< the counter itself with one rank
  void* window_ = nullptr;
  int64_t* base_ = nullptr;
};

}  // namespace quell::dist
