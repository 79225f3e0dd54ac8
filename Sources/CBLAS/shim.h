#include <cblas.h>
// OpenBLAS extensions (declared by OpenBLAS's cblas.h; repeated here for BLAS builds that omit them).
int openblas_get_num_threads(void);
void openblas_set_num_threads(int num_threads);
char *openblas_get_corename(void);
