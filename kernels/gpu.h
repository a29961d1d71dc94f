// kernels/gpu.h: what GPUs this process can use.
//
// Compiled from gpu.cu when the build has CUDA and from gpu_none.cc when it does not, so callers
// never need #ifdefs. Thread-safe; every call asks the CUDA runtime afresh.
#pragma once

#include <string>
#include <vector>

namespace cachesvc::kernels {

struct GpuDevice {
  int index = 0;
  std::string name;            // e.g. "NVIDIA H100 80GB HBM3"
  int compute_capability = 0;  // major * 10 + minor, e.g. 90
  unsigned long long memory_bytes = 0;
};

struct GpuInventory {
  bool built_with_cuda = false;    // this binary contains CUDA code
  std::vector<GpuDevice> devices;  // empty without a GPU or a driver
  std::string note;                // why there are none ("no CUDA driver", ...), empty otherwise
};

// Lists the GPUs. Never fails: a missing driver or device gives an empty list and a note.
GpuInventory QueryGpus();

}  // namespace cachesvc::kernels
