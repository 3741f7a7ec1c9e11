"""Helpers shared by the GPU kernel tests: poisoned outputs, fresh seeds, relative error."""
import torch


def poison():
    """Fill the caching allocator's free memory with NaN so torch.empty outputs start as NaN."""
    free = torch.cuda.mem_get_info()[0]
    buf = torch.empty(min(int(free * 0.4), 16 << 30) // 4, device="cuda").fill_(float("nan"))
    del buf


def rel(a, b):
    a, b = a.float(), b.float()
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def fresh_gen():
    """A generator on a fresh random seed (reported in failure messages) for every test run."""
    seed = torch.seed() % (2 ** 31)
    return torch.Generator(device="cuda").manual_seed(seed), seed
