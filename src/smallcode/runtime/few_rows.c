/* out (M, N) = x (M, K) @ w (N, K)^T in float32, for the few rows of a decode step on CPU.
 *
 * Each weight row is read once, in order, and dotted with up to four input rows at a time while
 * those stay in L1 (why that matters: cpu_decode.py). w is nn.Linear's (out, in) layout, row-major.
 *
 * Plain C with GCC/Clang vector extensions: `-march=native` picks AVX2/AVX-512/NEON, and without
 * OpenMP the pragma is ignored (one thread, same results). Built and loaded by cpu_decode.py.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef float v8 __attribute__((vector_size(32)));

static inline v8 load8(const float *p) { v8 v; memcpy(&v, p, sizeof v); return v; }

static inline float hsum(v8 v) {
    float s = 0.0f;
    for (int j = 0; j < 8; j++) s += v[j];
    return s;
}

/* Output columns [n0, n1) for every row. */
static void columns(const float *x, long M, long K, const float *w, long N, float *out, long n0, long n1) {
    const long K8 = K & ~7L;
    for (long n = n0; n < n1; n++) {
        const float *wn = w + n * K;
        long m = 0;
        for (; m + 4 <= M; m += 4) {
            const float *x0 = x + m * K, *x1 = x0 + K, *x2 = x1 + K, *x3 = x2 + K;
            v8 a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};
            for (long k = 0; k < K8; k += 8) {
                v8 wv = load8(wn + k);
                a0 += load8(x0 + k) * wv; a1 += load8(x1 + k) * wv;
                a2 += load8(x2 + k) * wv; a3 += load8(x3 + k) * wv;
            }
            float s0 = hsum(a0), s1 = hsum(a1), s2 = hsum(a2), s3 = hsum(a3);
            for (long k = K8; k < K; k++) {
                s0 += x0[k] * wn[k]; s1 += x1[k] * wn[k]; s2 += x2[k] * wn[k]; s3 += x3[k] * wn[k];
            }
            out[m * N + n] = s0; out[(m + 1) * N + n] = s1; out[(m + 2) * N + n] = s2; out[(m + 3) * N + n] = s3;
        }
        for (; m + 2 <= M; m += 2) {
            const float *x0 = x + m * K, *x1 = x0 + K;
            v8 a0 = {0}, a1 = {0};
            for (long k = 0; k < K8; k += 8) {
                v8 wv = load8(wn + k);
                a0 += load8(x0 + k) * wv; a1 += load8(x1 + k) * wv;
            }
            float s0 = hsum(a0), s1 = hsum(a1);
            for (long k = K8; k < K; k++) { s0 += x0[k] * wn[k]; s1 += x1[k] * wn[k]; }
            out[m * N + n] = s0; out[(m + 1) * N + n] = s1;
        }
        for (; m < M; m++) {
            /* one row: two accumulators, so consecutive FMAs do not wait on each other */
            const float *x0 = x + m * K;
            v8 a0 = {0}, b0 = {0};
            long k = 0;
            for (; k + 16 <= K8; k += 16) {
                a0 += load8(x0 + k) * load8(wn + k);
                b0 += load8(x0 + k + 8) * load8(wn + k + 8);
            }
            for (; k < K8; k += 8) a0 += load8(x0 + k) * load8(wn + k);
            float s0 = hsum(a0 + b0);
            for (k = K8; k < K; k++) s0 += x0[k] * wn[k];
            out[m * N + n] = s0;
        }
    }
}

/* Below this many weight elements a second thread costs more to wake than it saves. */
#define MIN_PARALLEL_WEIGHTS (1L << 16)

void sc_linear_f32(const float *x, long M, long K, const float *w, long N, float *out, int threads) {
    if (threads <= 1 || N * K < MIN_PARALLEL_WEIGHTS || N < threads) {
        columns(x, M, K, w, N, out, 0, N);
        return;
    }
    const long per = (N + threads - 1) / threads;
#pragma omp parallel for num_threads(threads) schedule(static, 1)
    for (int t = 0; t < threads; t++) {
        long n0 = t * per, n1 = n0 + per < N ? n0 + per : N;
        if (n0 < n1) columns(x, M, K, w, N, out, n0, n1);
    }
}

/* A few tokens' mixture-of-experts feed-forward, routing included (Mixtral's rule, as moe.Router):
 * probabilities softmax(router x), the top_k largest kept (ties to the lower expert id) and
 * renormalised to sum to one; out[n] = sum_j p[n, j] * expert_{e[n, j]}(x[n]) with
 * expert_e(v) = down_e(silu(gate_e v) * up_e v). router is (E, D), w_gate_up (E, 2F, D) with the gate
 * rows first, w_down (E, D, F), all row-major. Each expert that any token chose runs once on all
 * of its tokens, so its weights are read once per call; the routing, the gather, the activation
 * and the weighted sum happen here too, instead of as some twenty small torch operations per
 * layer. Returns 0, or -1 when top_k is not in 1..E or memory runs out. */
int sc_moe_f32(const float *x, long N, long D, const float *router, long E, long top_k,
               const float *w_gate_up, const float *w_down, long F, float *out, int threads) {
    if (top_k < 1 || top_k > E) return -1;
    float *xs = malloc(sizeof(float) * (N * (D + 3 * F + D) + N * E + N * top_k));
    long *rows = malloc(sizeof(long) * (N + N * top_k));
    float *mix = malloc(sizeof(float) * N);
    if (!xs || !rows || !mix) { free(xs); free(rows); free(mix); return -1; }
    float *h = xs + N * D, *act = h + N * 2 * F, *y = act + N * F, *prob = y + N * D, *weight = prob + N * E;
    long *ids = rows + N;

    sc_linear_f32(x, N, D, router, E, prob, 1);
    for (long n = 0; n < N; n++) {
        float *p = prob + n * E, top = p[0], total = 0.0f, kept = 0.0f;
        for (long e = 1; e < E; e++) top = p[e] > top ? p[e] : top;
        for (long e = 0; e < E; e++) { p[e] = expf(p[e] - top); total += p[e]; }
        for (long e = 0; e < E; e++) p[e] /= total;
        for (long j = 0; j < top_k; j++) {  /* top_k is small: repeated argmax over the rest */
            long best = -1;
            for (long e = 0; e < E; e++) {
                int taken = 0;
                for (long i = 0; i < j; i++) taken |= ids[n * top_k + i] == e;
                if (!taken && (best < 0 || p[e] > p[best])) best = e;
            }
            ids[n * top_k + j] = best;
            weight[n * top_k + j] = p[best];
            kept += p[best];
        }
        for (long j = 0; j < top_k; j++) weight[n * top_k + j] /= kept;
    }

    memset(out, 0, sizeof(float) * N * D);
    for (long e = 0; e < E; e++) {
        long m = 0;
        for (long n = 0; n < N; n++)
            for (long j = 0; j < top_k; j++)
                if (ids[n * top_k + j] == e) { rows[m] = n; mix[m] = weight[n * top_k + j]; m++; }
        if (m == 0) continue;
        for (long r = 0; r < m; r++) memcpy(xs + r * D, x + rows[r] * D, sizeof(float) * D);
        sc_linear_f32(xs, m, D, w_gate_up + e * 2 * F * D, 2 * F, h, threads);
        for (long r = 0; r < m; r++)
            for (long f = 0; f < F; f++) {
                float g = h[r * 2 * F + f];
                act[r * F + f] = g / (1.0f + expf(-g)) * h[r * 2 * F + F + f];
            }
        sc_linear_f32(act, m, F, w_down + e * D * F, D, y, threads);
        for (long r = 0; r < m; r++) {
            float *o = out + rows[r] * D;
            for (long d = 0; d < D; d++) o[d] += mix[r] * y[r * D + d];
        }
    }
    free(xs); free(rows); free(mix);
    return 0;
}
