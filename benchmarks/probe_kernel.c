/* The floor probe of benchmarks/floor.py (--probes): what a compiled one-pass kernel would give.
 *
 * Never part of the package, which rounds with numpy. It does what olive_bf16_pass.rounding's fused
 * chunk does for nearest_even, in one pass instead of 13 numpy passes: the BF16 bits
 * ((u + 0x7FFF + ((u >> 16) & 1)) >> 16), the largest |x - r| and |x - r| / |x|, and 0 (the chunk
 * goes to the general numpy path, as a NaN or Inf error does there) when the chunk holds a NaN or
 * Inf input or a finite input rounded to Inf. x - r is exact and the division is one IEEE division,
 * so the figures are the numpy path's to the bit; floor.py checks bytes and reports before timing.
 * Non-negative floats order like their bit patterns, so the maxima are unsigned integer maxima,
 * which compilers vectorize. Built with the system compiler, -O3 -march=native: this machine's floor.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

int round_chunk(const uint8_t *src, uint16_t *out, long n, float *max_abs, float *max_rel) {
    uint32_t worst = 0, worst_rel = 0, special = 0;
    for (long i = 0; i < n; i++) {
        uint32_t u, rounded, e_bits, q_bits;
        float x, r;
        memcpy(&u, src + 4 * i, 4); /* the source may sit at any offset of a mapped file */
        rounded = (u + 0x7FFFu + ((u >> 16) & 1u)) & 0xFFFF0000u;
        out[i] = (uint16_t)(rounded >> 16);
        memcpy(&x, &u, 4);
        memcpy(&r, &rounded, 4);
        float e = fabsf(x - r);
        float ax = fabsf(x);
        float q = e / (ax == 0.0f ? 1.0f : ax); /* zero: no error, and no 0 / 0 */
        memcpy(&e_bits, &e, 4);
        memcpy(&q_bits, &q, 4);
        special |= ((u & 0x7F800000u) == 0x7F800000u) | ((rounded & 0x7F800000u) == 0x7F800000u);
        worst = e_bits > worst ? e_bits : worst;
        worst_rel = q_bits > worst_rel ? q_bits : worst_rel;
    }
    memcpy(max_abs, &worst, 4);
    memcpy(max_rel, &worst_rel, 4);
    return !special;
}
