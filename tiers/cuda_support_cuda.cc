// cuda_support.h with the CUDA runtime. Host code only (no kernels), compiled by the C++
// compiler against the CUDA toolkit headers.
#include <cuda_runtime_api.h>

#include <cstring>

#include "fmt/format.h"
#include "tiers/cuda_support.h"

namespace cachesvc::tiers {
namespace {

[[nodiscard]] absl::Status CudaError(cudaError_t err, const char* call, const char* file,
                                     int line) {
  const std::string message =
      fmt::format("{} failed: {} ({}) at {}:{}", call, cudaGetErrorString(err),
                  static_cast<int>(err), file, line);
  switch (err) {
    case cudaErrorMemoryAllocation:
      return absl::ResourceExhaustedError(message);
    case cudaErrorInvalidValue:
    case cudaErrorInvalidDevice:
      return absl::InvalidArgumentError(message);
    case cudaErrorNoDevice:
    case cudaErrorInsufficientDriver:
      return absl::UnavailableError(message);
    default:
      return absl::InternalError(message);
  }
}

// Checks one CUDA call and returns its error as a Status from the enclosing function.
#define CACHESVC_CUDA_RETURN_IF_ERROR(call)                             \
  do {                                                                  \
    const cudaError_t cachesvc_cuda_err = (call);                       \
    if (cachesvc_cuda_err != cudaSuccess) {                             \
      (void)cudaGetLastError(); /* clear the sticky-free error state */ \
      return CudaError(cachesvc_cuda_err, #call, __FILE__, __LINE__);   \
    }                                                                   \
  } while (false)

}  // namespace

int CudaDeviceCount() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    (void)cudaGetLastError();
    return 0;
  }
  return count;
}

absl::Status CudaHostRegister(void* address, std::size_t bytes) {
  CACHESVC_CUDA_RETURN_IF_ERROR(cudaHostRegister(address, bytes, cudaHostRegisterPortable));
  return absl::OkStatus();
}

void CudaHostUnregister(void* address) {
  if (cudaHostUnregister(address) != cudaSuccess) (void)cudaGetLastError();
}

absl::StatusOr<void*> CudaMallocOnDevice(int device, std::size_t bytes) {
  CACHESVC_CUDA_RETURN_IF_ERROR(cudaSetDevice(device));
  void* ptr = nullptr;
  CACHESVC_CUDA_RETURN_IF_ERROR(cudaMalloc(&ptr, bytes));
  return ptr;
}

void CudaFreeOnDevice(int device, void* address) {
  if (cudaSetDevice(device) != cudaSuccess || cudaFree(address) != cudaSuccess) {
    (void)cudaGetLastError();
  }
}

absl::Status CudaCopy(void* dst, const void* src, std::size_t bytes) {
  CACHESVC_CUDA_RETURN_IF_ERROR(cudaMemcpy(dst, src, bytes, cudaMemcpyDefault));
  return absl::OkStatus();
}

absl::StatusOr<CudaIpcHandleBytes> CudaExportIpcHandle(void* base) {
  cudaIpcMemHandle_t handle;
  CACHESVC_CUDA_RETURN_IF_ERROR(cudaIpcGetMemHandle(&handle, base));
  CudaIpcHandleBytes out{};
  static_assert(sizeof(handle) == sizeof(out));
  std::memcpy(out.data(), &handle, sizeof(handle));
  return out;
}

}  // namespace cachesvc::tiers
