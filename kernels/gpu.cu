#include <cuda_runtime_api.h>

#include "kernels/gpu.h"

namespace cachesvc::kernels {

GpuInventory QueryGpus() {
  GpuInventory inventory;
  inventory.built_with_cuda = true;
  int count = 0;
  if (cudaError_t err = cudaGetDeviceCount(&count); err != cudaSuccess) {
    inventory.note = cudaGetErrorString(err);
    return inventory;
  }
  for (int i = 0; i < count; ++i) {
    cudaDeviceProp prop{};
    if (cudaError_t err = cudaGetDeviceProperties(&prop, i); err != cudaSuccess) {
      inventory.note = cudaGetErrorString(err);
      continue;
    }
    inventory.devices.push_back(GpuDevice{i, prop.name, prop.major * 10 + prop.minor,
                                          static_cast<unsigned long long>(prop.totalGlobalMem)});
  }
  if (inventory.devices.empty() && inventory.note.empty()) inventory.note = "no CUDA device";
  return inventory;
}

}  // namespace cachesvc::kernels
