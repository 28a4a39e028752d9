/* A C program outside the ringattn tree, built against the installed package
 * (tests/install/check_install.sh). It runs one distributed forward through
 * the C API with segments longer than a shard, and checks this rank's rows
 * against a one-rank context over the whole sequence (relative L2 <= 1e-5,
 * f32 on the cpu backend) and the status codes of ringattn.h. No libm: the
 * documented link command is all it needs.
 *   mpicc hello.c -o hello_c $(pkg-config --cflags --libs ringattn)
 *   mpirun -np 2 ./hello_c */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ringattn/ringattn.h"

/* Inputs in [-1, 1), a pure function of (tensor, global index). */
static float synth(unsigned tensor, int64_t i) {
  uint64_t x = (uint64_t)i * 0x9E3779B97F4A7C15ull + tensor * 0xBF58476D1CE4E5B9ull;
  x ^= x >> 31;
  x *= 0x94D049BB133111EBull;
  x ^= x >> 29;
  return (float)((double)(x >> 11) / 9007199254740992.0 * 2.0 - 1.0);
}

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int rank = 0, world = 1, bad = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &world);

  /* 512 tokens per rank; the (1024, 2) and (2048, 4) segments span ranks. */
  static const int64_t w[] = {256, 1024, 2048}, r[] = {1, 2, 4};
  ringattn_config_t cfg;
  memset(&cfg, 0, sizeof(cfg));
  cfg.struct_size = (uint32_t)sizeof(cfg);
  cfg.num_branches = 3;
  cfg.w = w;
  cfg.r = r;
  cfg.heads = 2;
  cfg.head_dim = 16;
  const int64_t N = 512 * (int64_t)world, L = N / world, row = cfg.heads * cfg.head_dim;

  float* q = malloc(sizeof(float) * (size_t)(N * row));
  float* k = malloc(sizeof(float) * (size_t)(N * row));
  float* v = malloc(sizeof(float) * (size_t)(N * row));
  float* o = malloc(sizeof(float) * (size_t)(N * row));
  float* o1 = malloc(sizeof(float) * (size_t)(N * row));
  float* lse = malloc(sizeof(float) * (size_t)(N * cfg.heads));
  for (int64_t i = 0; i < N * row; ++i) {
    q[i] = synth(0, i);
    k[i] = synth(1, i);
    v[i] = synth(2, i);
  }

  ringattn_context_t ctx = NULL, solo = NULL;
  int rc = ringattn_create(&cfg, MPI_COMM_WORLD, &ctx);
  if (rc == RINGATTN_STATUS_OK) rc = ringattn_forward(ctx, 1, N, q + rank * L * row, k + rank * L * row,
                                                      v + rank * L * row, o, lse, NULL);
  if (rc == RINGATTN_STATUS_OK) rc = ringattn_synchronize(ctx);
  if (rc == RINGATTN_STATUS_OK) rc = ringattn_create(&cfg, MPI_COMM_SELF, &solo);
  if (rc == RINGATTN_STATUS_OK) rc = ringattn_forward(solo, 1, N, q, k, v, o1, lse, NULL);
  if (rc != RINGATTN_STATUS_OK) {
    fprintf(stderr, "hello_c: rank %d: error %d: %s\n", rank, rc, ringattn_last_error());
    MPI_Abort(MPI_COMM_WORLD, 1);
  }
  double num = 0, den = 0;
  for (int64_t i = 0; i < L * row; ++i) {
    const double a = o[i], b = o1[rank * L * row + i];
    num += (a - b) * (a - b);
    den += b * b;
  }
  const double rel2 = den > 0 ? num / den : 1.0; /* squared relative L2 */
  if (!(rel2 <= 1e-10)) bad++;
  /* A null context is an invalid argument, with a message. */
  rc = ringattn_synchronize(NULL);
  if (rc != RINGATTN_STATUS_INVALID_ARGUMENT || strstr(ringattn_last_error(), "null") == NULL) bad++;
  printf("hello_c: rank %d of %d: tokens [%lld, %lld), squared O relative L2 vs one rank %.2e, null context -> %d (%s)\n",
         rank, world, (long long)(rank * L), (long long)((rank + 1) * L), rel2, rc, ringattn_last_error());
  fflush(stdout);

  ringattn_destroy(ctx);
  ringattn_destroy(solo);
  free(q);
  free(k);
  free(v);
  free(o);
  free(o1);
  free(lse);
  int total = 0;
  MPI_Allreduce(&bad, &total, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
  if (rank == 0) printf("hello_c: %d ranks: %s\n", world, total ? "FAILED" : "OK");
  MPI_Finalize();
  return total ? 1 : 0;
}
