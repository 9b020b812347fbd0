// The fused step (DESIGN.md section 2, step 5) in CUDA C: one thread block per patch.
//
// Inputs: a flat uint8 buffer of RGB images (H x W x 3, row-major) and per-patch tables base[n] (flat index of
// the patch's top-left red byte) and stride[n] (row length in bytes). The CAM is either given (N x CH x CW
// float32) or computed here as relu(sum_k w[n,k] * A[n,k]) from activations A (N x K x CH x CW) and weights
// (N x K), and then written to `cams`.
// Output: N x 4 x P x P (float32 or float16): channels 0-2 = pixel / 255, channel 3 = the CAM bilinearly
// upsampled to P x P (align_corners = false, source index clamped at 0) and min-max normalised over the
// upsampled map; a flat map (max - min <= flat_rtol * max(|max|, |min|)) gives zeros.
// Pass 1 writes the pixel channels (each image byte is read once) and reduces min/max; pass 2 writes channel 3.

#define GCAGE_MAX_CAM 1024  // CH * CW limit (the CAM lives in shared memory)
#define GCAGE_THREADS 256

// float16 is stored as its bit pattern (unsigned short) so the source needs no header: it compiles with nvcc and
// with NVRTC without include paths.
struct half_bits { unsigned short bits; };

__device__ __forceinline__ void store_out(float* p, float v) { *p = v; }
__device__ __forceinline__ void store_out(half_bits* p, float v) {
    unsigned short h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(v));
    p->bits = h;
}

__device__ __forceinline__ void taps(int o, int n_in, int n_out, int* i0, int* i1, float* lam) {
    float src = fmaxf(((float)o + 0.5f) * ((float)n_in / (float)n_out) - 0.5f, 0.0f);
    int a = min((int)floorf(src), n_in - 1);
    *i0 = a;
    *i1 = min(a + 1, n_in - 1);
    *lam = fminf(src - (float)a, 1.0f);
}

__device__ __forceinline__ float bilinear(const float* cam, int cw, int y0, int y1, float ly, int x0, int x1,
                                          float lx) {
    float top = (1.0f - lx) * cam[y0 * cw + x0] + lx * cam[y0 * cw + x1];
    float bot = (1.0f - lx) * cam[y1 * cw + x0] + lx * cam[y1 * cw + x1];
    return (1.0f - ly) * top + ly * bot;
}

template <typename T>
__device__ void fuse_cam_impl(const unsigned char* __restrict__ img, const long long* __restrict__ base,
                              const long long* __restrict__ stride, float* __restrict__ cams,
                              const float* __restrict__ act, const float* __restrict__ weights,
                              T* __restrict__ out, int K, int P, int CH, int CW, int from_act, float flat_rtol) {
    __shared__ float cam[GCAGE_MAX_CAM];
    __shared__ float red_lo[GCAGE_THREADS];
    __shared__ float red_hi[GCAGE_THREADS];
    const int n = blockIdx.x;
    const int tid = threadIdx.x;
    const int hw = CH * CW;
    float* cam_n = cams + (long long)n * hw;

    if (from_act) {
        const float* a = act + (long long)n * K * hw;
        const float* w = weights + (long long)n * K;
        for (int p = tid; p < hw; p += blockDim.x) {
            float acc = 0.0f;
            for (int k = 0; k < K; ++k) acc += w[k] * a[(long long)k * hw + p];
            acc = fmaxf(acc, 0.0f);
            cam[p] = acc;
            cam_n[p] = acc;
        }
    } else {
        for (int p = tid; p < hw; p += blockDim.x) cam[p] = cam_n[p];
    }
    __syncthreads();

    const long long b = base[n];
    const long long s = stride[n];
    const long long plane = (long long)P * P;
    T* o = out + (long long)n * 4 * plane;
    float lo = __int_as_float(0x7f800000), hi = __int_as_float(0xff800000);
    for (int e = tid; e < P * P; e += blockDim.x) {
        const int r = e / P, c = e - (e / P) * P;
        const unsigned char* px = img + b + r * s + 3LL * c;
        store_out(o + e, __fdiv_rn((float)px[0], 255.0f));
        store_out(o + plane + e, __fdiv_rn((float)px[1], 255.0f));
        store_out(o + 2 * plane + e, __fdiv_rn((float)px[2], 255.0f));
        int y0, y1, x0, x1;
        float ly, lx;
        taps(r, CH, P, &y0, &y1, &ly);
        taps(c, CW, P, &x0, &x1, &lx);
        const float v = bilinear(cam, CW, y0, y1, ly, x0, x1, lx);
        lo = fminf(lo, v);
        hi = fmaxf(hi, v);
    }
    red_lo[tid] = lo;
    red_hi[tid] = hi;
    __syncthreads();
    for (int half = blockDim.x / 2; half > 0; half >>= 1) {
        if (tid < half) {
            red_lo[tid] = fminf(red_lo[tid], red_lo[tid + half]);
            red_hi[tid] = fmaxf(red_hi[tid], red_hi[tid + half]);
        }
        __syncthreads();
    }
    lo = red_lo[0];
    hi = red_hi[0];
    const float rng = hi - lo;
    const bool ok = rng > flat_rtol * fmaxf(fabsf(hi), fabsf(lo));
    for (int e = tid; e < P * P; e += blockDim.x) {
        const int r = e / P, c = e - (e / P) * P;
        float v = 0.0f;
        if (ok) {
            int y0, y1, x0, x1;
            float ly, lx;
            taps(r, CH, P, &y0, &y1, &ly);
            taps(c, CW, P, &x0, &x1, &lx);
            v = __fdiv_rn(bilinear(cam, CW, y0, y1, ly, x0, x1, lx) - lo, rng);
        }
        store_out(o + 3 * plane + e, v);
    }
}

// Launch with grid = (N), block = (GCAGE_THREADS); blockDim.x must be a power of two <= GCAGE_THREADS.
extern "C" __global__ void __launch_bounds__(GCAGE_THREADS)
fuse_cam_f32(const unsigned char* img, const long long* base, const long long* stride, float* cams,
             const float* act, const float* weights, float* out, int K, int P, int CH, int CW, int from_act,
             float flat_rtol) {
    fuse_cam_impl<float>(img, base, stride, cams, act, weights, out, K, P, CH, CW, from_act, flat_rtol);
}

extern "C" __global__ void __launch_bounds__(GCAGE_THREADS)
fuse_cam_f16(const unsigned char* img, const long long* base, const long long* stride, float* cams,
             const float* act, const float* weights, half_bits* out, int K, int P, int CH, int CW, int from_act,
             float flat_rtol) {
    fuse_cam_impl<half_bits>(img, base, stride, cams, act, weights, out, K, P, CH, CW, from_act, flat_rtol);
}
