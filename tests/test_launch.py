"""hybridlab.kernels.launch: the plan key holds what Triton specializes on, and a FastKernel
launches like the kernel it wraps. Under the interpreter every call takes Triton's own path; on a
GPU the repeats take the compiled kernel's launcher (the same test, run there)."""
import torch
import triton
import triton.language as tl

from hybridlab.kernels.launch import FastKernel, plan_key

DEV = "cuda" if torch.cuda.is_available() else "cpu"   # CPU: the interpreter (conftest)


@triton.jit
def scaled_copy(x_ptr, y_ptr, n, stride, scale, BLOCK: tl.constexpr):
    o = tl.arange(0, BLOCK)
    v = tl.load(x_ptr + o * stride, mask=o < n, other=0.0)
    tl.store(y_ptr + o, v * scale, mask=o < n)


def test_plan_key_tells_apart_what_triton_specializes_on():
    a, b = torch.zeros(64), torch.zeros(64)
    assert plan_key((a, 5), {"BLOCK": 16}) == plan_key((b, 5), {"BLOCK": 16})      # same kind
    assert plan_key((a, 5), {}) != plan_key((a[1:], 5), {})      # 4-byte offset: not 16-aligned
    assert plan_key((a, 5), {}) != plan_key((a.double(), 5), {})                    # dtype
    assert plan_key((a, 5), {}) != plan_key((a, 1), {})           # an int of 1 is a constant
    assert plan_key((a, 16), {}) != plan_key((a, 32), {})         # every int by value
    assert plan_key((a, None), {}) != plan_key((a, 0), {})
    assert plan_key((a,), {"BLOCK": 16}) != plan_key((a,), {"BLOCK": 32})           # constexprs
    assert plan_key((a,), {"num_warps": 4}) != plan_key((a,), {"num_warps": 8})     # options


def test_fast_kernel_launches_like_the_kernel():
    """Repeated calls, a new stride, a stride of 1 (a specialized constant) and a shorter n: each
    result as the equations say (on the GPU the repeats take the cached launcher)."""
    fast = FastKernel(scaled_copy)
    x = torch.arange(40, dtype=torch.float32, device=DEV)
    for stride, n in ((2, 16), (2, 16), (1, 16), (1, 7), (2, 16)):
        y = torch.full((16,), -1.0, device=DEV)
        fast[(1,)](x, y, n, stride, 0.5, BLOCK=16)
        torch.testing.assert_close(y[:n], x[::stride][:n] * 0.5)
        assert (y[n:] == -1).all()
    # three distinct specializations cached on a GPU; the interpreter returns no compiled kernel
    assert len(fast.plans) == (3 if DEV == "cuda" else 0)
