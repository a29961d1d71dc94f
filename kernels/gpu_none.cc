#include "kernels/gpu.h"

namespace cachesvc::kernels {

GpuInventory QueryGpus() {
  GpuInventory inventory;
  inventory.note = "built without CUDA";
  return inventory;
}

}  // namespace cachesvc::kernels
