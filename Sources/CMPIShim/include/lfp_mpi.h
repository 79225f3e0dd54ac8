// A tiny C surface over MPI for swift-lfp's data-parallel training. It exists because
// Open MPI's handles (MPI_COMM_WORLD, MPI_FLOAT, MPI_SUM) are macros Swift cannot import.
#ifndef LFP_MPI_H
#define LFP_MPI_H

/// MPI_Init_thread (funneled); returns 0 on success.
int lfp_mpi_init(void);
/// 1 when MPI is initialised and not finalised.
int lfp_mpi_is_initialized(void);
int lfp_mpi_rank(void);
int lfp_mpi_size(void);
/// In-place sum over all ranks of `count` floats; returns 0 on success.
int lfp_mpi_allreduce_sum(float *buffer, long count);
/// In-place max over all ranks of `count` ints; returns 0 on success.
int lfp_mpi_allreduce_max_int(int *buffer, long count);
/// Broadcast `count` floats (or bytes) from `root`; returns 0 on success.
int lfp_mpi_broadcast_floats(float *buffer, long count, int root);
int lfp_mpi_broadcast_bytes(char *buffer, long count, int root);
void lfp_mpi_barrier(void);
int lfp_mpi_finalize(void);
void lfp_mpi_abort(int code);

#endif
