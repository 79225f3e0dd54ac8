#include "lfp_mpi.h"

// `swift build` compiles every target, this one too, even without the MPI trait. Without Open MPI's
// headers it is then empty (nothing links it unless the trait is on); with the trait it needs them.
#if __has_include(<mpi.h>)
#include <limits.h>
#include <mpi.h>

int lfp_mpi_init(void) {
    int provided = 0;
    return MPI_Init_thread(NULL, NULL, MPI_THREAD_FUNNELED, &provided) == MPI_SUCCESS ? 0 : 1;
}

int lfp_mpi_is_initialized(void) {
    int initialized = 0, finalized = 0;
    MPI_Initialized(&initialized);
    MPI_Finalized(&finalized);
    return initialized && !finalized;
}

int lfp_mpi_rank(void) { int r = 0; MPI_Comm_rank(MPI_COMM_WORLD, &r); return r; }
int lfp_mpi_size(void) { int s = 1; MPI_Comm_size(MPI_COMM_WORLD, &s); return s; }

// MPI counts are ints: large buffers go in chunks.
int lfp_mpi_allreduce_sum(float *buffer, long count) {
    while (count > 0) {
        int n = count > INT_MAX ? INT_MAX : (int)count;
        if (MPI_Allreduce(MPI_IN_PLACE, buffer, n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD) != MPI_SUCCESS) return 1;
        buffer += n; count -= n;
    }
    return 0;
}

int lfp_mpi_allreduce_max_int(int *buffer, long count) {
    return MPI_Allreduce(MPI_IN_PLACE, buffer, (int)count, MPI_INT, MPI_MAX, MPI_COMM_WORLD) == MPI_SUCCESS ? 0 : 1;
}

int lfp_mpi_broadcast_floats(float *buffer, long count, int root) {
    while (count > 0) {
        int n = count > INT_MAX ? INT_MAX : (int)count;
        if (MPI_Bcast(buffer, n, MPI_FLOAT, root, MPI_COMM_WORLD) != MPI_SUCCESS) return 1;
        buffer += n; count -= n;
    }
    return 0;
}

int lfp_mpi_broadcast_bytes(char *buffer, long count, int root) {
    return MPI_Bcast(buffer, (int)count, MPI_CHAR, root, MPI_COMM_WORLD) == MPI_SUCCESS ? 0 : 1;
}

void lfp_mpi_barrier(void) { MPI_Barrier(MPI_COMM_WORLD); }
int lfp_mpi_finalize(void) { return MPI_Finalize() == MPI_SUCCESS ? 0 : 1; }
void lfp_mpi_abort(int code) { MPI_Abort(MPI_COMM_WORLD, code); }

#elif defined(LFP_MPI_TRAIT)
#error "the MPI trait needs Open MPI's headers (mpi.h): install libopenmpi-dev (bash scripts/install-deps.sh)"
#endif
