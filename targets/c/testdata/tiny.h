/* tiny: a hand-written model with the interface of `--target c` (fixture of mcu_sim_test.ts).
 * output[j] = b[j] + sum_i w[j][i] * input[i] for j < 4, accumulated in the arena in order i = 0..7;
 * output[4] = output[0] * 2^-130, a subnormal, so a flush-to-zero FPU would differ from the host. */
#ifndef TINY_H
#define TINY_H

#define TINY_INPUT_SIZE 8
#define TINY_OUTPUT_SIZE 5
#define TINY_ARENA_SIZE 16
#define TINY_ARENA_ALIGN 8

/* Returns 0, or -1 for a null pointer, -2 for an arena not aligned to TINY_ARENA_ALIGN. */
int tiny_run(const float *input, float *output, void *arena);

#endif
