// tiers/cuda_support.h: the few CUDA runtime calls the tiers need, behind plain functions so that
// tier code has no #ifdefs and builds the same with or without CUDA.
//
// Compiled from cuda_support_cuda.cc when the build has CUDA (CACHESVC_HAVE_CUDA) and from
// cuda_support_none.cc otherwise, where every call answers UNAVAILABLE ("built without CUDA").
// Every CUDA call is checked; an error becomes a Status naming the call, the CUDA error and the
// file and line, and nothing aborts. Thread-safe (the CUDA runtime is).
#pragma once

#include <array>
#include <cstddef>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace cachesvc::tiers {

// Number of usable CUDA devices: 0 without CUDA, a driver or a GPU.
int CudaDeviceCount();

// Page-locks host memory so GPU copies from and to it are DMA (cudaHostRegister, portable).
[[nodiscard]] absl::Status CudaHostRegister(void* address, std::size_t bytes);
void CudaHostUnregister(void* address);

// Device memory on `device`.
[[nodiscard]] absl::StatusOr<void*> CudaMallocOnDevice(int device, std::size_t bytes);
void CudaFreeOnDevice(int device, void* address);

// A synchronous copy in whichever direction the two addresses need (cudaMemcpyDefault: host to
// device, device to host or device to device).
[[nodiscard]] absl::Status CudaCopy(void* dst, const void* src, std::size_t bytes);

// A CUDA IPC memory handle for an allocation made by CudaMallocOnDevice (64 opaque bytes).
using CudaIpcHandleBytes = std::array<unsigned char, 64>;
[[nodiscard]] absl::StatusOr<CudaIpcHandleBytes> CudaExportIpcHandle(void* base);

}  // namespace cachesvc::tiers
