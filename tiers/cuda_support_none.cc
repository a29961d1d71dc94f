// cuda_support.h for builds without CUDA: every call is UNAVAILABLE and no device is present.
#include "tiers/cuda_support.h"

namespace cachesvc::tiers {
namespace {

[[nodiscard]] absl::Status NoCuda() {
  return absl::UnavailableError("cachesvc was built without CUDA");
}

}  // namespace

int CudaDeviceCount() { return 0; }
absl::Status CudaHostRegister(void*, std::size_t) { return NoCuda(); }
void CudaHostUnregister(void*) {}
absl::StatusOr<void*> CudaMallocOnDevice(int, std::size_t) { return NoCuda(); }
void CudaFreeOnDevice(int, void*) {}
absl::Status CudaCopy(void*, const void*, std::size_t) { return NoCuda(); }
absl::StatusOr<CudaIpcHandleBytes> CudaExportIpcHandle(void*) { return NoCuda(); }

}  // namespace cachesvc::tiers
