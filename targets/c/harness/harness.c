/* The test harness of `deno task mcu-sim`: runs a model emitted by `--target c` on golden input vectors and writes
 * its outputs, on the host (gcc) and on a Cortex-M4 under qemu (arm-none-eabi-gcc, newlib semihosting, startup_m4.c).
 *
 * The model is named by macros given with -D (all required):
 *   CNNC_HEADER        the model's header as an include operand, e.g. -DCNNC_HEADER='"vgg_sparse.h"'
 *   CNNC_RUN           its entry point, e.g. -DCNNC_RUN=vgg_sparse_run
 *   CNNC_ARENA_SIZE    -DCNNC_ARENA_SIZE=VGG_SPARSE_ARENA_SIZE (bytes); likewise
 *   CNNC_ARENA_ALIGN   VGG_SPARSE_ARENA_ALIGN (bytes, a power of two),
 *   CNNC_INPUT_SIZE    VGG_SPARSE_INPUT_SIZE and
 *   CNNC_OUTPUT_SIZE   VGG_SPARSE_OUTPUT_SIZE (float elements per sample).
 * Optional: CNNC_INPUT_PATH, CNNC_OUTPUT_PATH, CNNC_SAMPLES, used when argv does not give them (a semihosting host
 * that passes no command line); the defaults are "input.bin", "output.bin" and 0 (every sample in the file).
 *
 * Usage: harness [INPUT.bin OUTPUT.bin [SAMPLES]]. INPUT.bin is raw float32 [samples, input size], OUTPUT.bin gets raw
 * float32 [samples, output size], both in the machine's byte order (little-endian on x86-64 and Cortex-M4). With
 * SAMPLES > 0 exactly that many are read, with 0 every sample up to the end of the file. The first line printed is
 * "cnnc-harness: input I output O arena A align L" (the header's sizes, checked against the manifest by mcu-sim), the
 * last "cnnc-harness: N samples". Exit status: 0; 2 for a bad command line or a file that cannot be read or written;
 * 3 when the model returned a non-zero status for a sample; 4 when it accepted a null input pointer.
 */
#include CNNC_HEADER

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef CNNC_INPUT_PATH
#define CNNC_INPUT_PATH "input.bin"
#endif
#ifndef CNNC_OUTPUT_PATH
#define CNNC_OUTPUT_PATH "output.bin"
#endif
#ifndef CNNC_SAMPLES
#define CNNC_SAMPLES 0
#endif

/* A zero-byte arena is legal for the model, not for a C array. */
#define CNNC_ARENA_BYTES ((CNNC_ARENA_SIZE) > 0 ? (CNNC_ARENA_SIZE) : 1)

static uint8_t cnnc_arena[CNNC_ARENA_BYTES] __attribute__((aligned(CNNC_ARENA_ALIGN)));
static float cnnc_input[CNNC_INPUT_SIZE];
static float cnnc_output[CNNC_OUTPUT_SIZE];

int main(int argc, char **argv) {
  const char *input_path = argc >= 3 ? argv[1] : CNNC_INPUT_PATH;
  const char *output_path = argc >= 3 ? argv[2] : CNNC_OUTPUT_PATH;
  long samples = argc >= 4 ? strtol(argv[3], NULL, 10) : (long)(CNNC_SAMPLES);
  long done = 0;
  FILE *in, *out;
  int status;

  printf("cnnc-harness: input %lu output %lu arena %lu align %lu\n", (unsigned long)(CNNC_INPUT_SIZE),
         (unsigned long)(CNNC_OUTPUT_SIZE), (unsigned long)(CNNC_ARENA_SIZE), (unsigned long)(CNNC_ARENA_ALIGN));
  if (argc == 2 || argc > 4 || samples < 0) {
    fprintf(stderr, "cnnc-harness: usage: harness [INPUT.bin OUTPUT.bin [SAMPLES]]\n");
    return 2;
  }
  status = CNNC_RUN(NULL, cnnc_output, cnnc_arena);
  if (status >= 0) {
    fprintf(stderr, "cnnc-harness: the model returned %d for a null input pointer, expected a negative status\n",
            status);
    return 4;
  }
  in = fopen(input_path, "rb");
  if (in == NULL) {
    fprintf(stderr, "cnnc-harness: cannot open %s\n", input_path);
    return 2;
  }
  out = fopen(output_path, "wb");
  if (out == NULL) {
    fprintf(stderr, "cnnc-harness: cannot create %s\n", output_path);
    fclose(in);
    return 2;
  }
  while (samples == 0 || done < samples) {
    size_t got = fread(cnnc_input, sizeof(float), CNNC_INPUT_SIZE, in);
    if (got == 0 && samples == 0 && feof(in)) break;
    if (got != (size_t)(CNNC_INPUT_SIZE)) {
      fprintf(stderr, "cnnc-harness: %s ends inside sample %ld (%lu of %lu floats)\n", input_path, done,
              (unsigned long)got, (unsigned long)(CNNC_INPUT_SIZE));
      fclose(in);
      fclose(out);
      return 2;
    }
    /* All-ones words (a NaN) in every output, so one the model leaves unwritten cannot match. */
    memset(cnnc_output, 0xff, sizeof cnnc_output);
    status = CNNC_RUN(cnnc_input, cnnc_output, cnnc_arena);
    if (status != 0) {
      fprintf(stderr, "cnnc-harness: the model returned %d for sample %ld\n", status, done);
      fclose(in);
      fclose(out);
      return 3;
    }
    if (fwrite(cnnc_output, sizeof(float), CNNC_OUTPUT_SIZE, out) != (size_t)(CNNC_OUTPUT_SIZE)) {
      fprintf(stderr, "cnnc-harness: cannot write %s\n", output_path);
      fclose(in);
      fclose(out);
      return 2;
    }
    done++;
  }
  fclose(in);
  if (fclose(out) != 0) {
    fprintf(stderr, "cnnc-harness: cannot write %s\n", output_path);
    return 2;
  }
  printf("cnnc-harness: %ld samples\n", done);
  return 0;
}
