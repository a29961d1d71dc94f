// client/python/cachesvc/_cachesvc_connector.cc: the pybind11 extension under the Python module
// `cachesvc` (client/python/cachesvc/connector.py): client::KvConnector on raw page pointers.
//
// This layer is deliberately thin and untyped: it takes plain ints (page addresses, byte strides),
// strings (dtype, codec) and buffers of uint32 token ids. Everything about torch tensors (dtype,
// shape, device, strides, keeping the tensors alive) is checked in connector.py, so that this
// extension does not link libtorch: it builds without torch and works with whichever torch the
// engine brings (Debian's python3-torch or a wheel), with no libtorch C++ ABI to match. What
// reaches this file is still validated by the connector itself (ValidatePagedKv, CheckBlockIds),
// so a wrong address or stride from a careless caller is an InvalidArgument, never a wild write
// the checks can see.
//
// Errors: a non-OK absl::Status becomes the C++ exception StatusException, translated into the
// Python exception that cachesvc.errors.from_status(code, message) builds (registered by the
// package with _set_error_factory); without a factory, RuntimeError("[CODE] message").
//
// The GIL is released around every call that may block (RPCs, UCX transfers, page copies, the
// wait for the background save); token and page-id inputs are copied into C++ vectors first.
//
// Thread-safety: that of KvConnector (client/kv_connector.h); Python callers keep its rules.
// pybind11's headers only: GCC 12's -Wnull-dereference false positive in its inline code.
#include "base/third_party_warnings.h"
CACHESVC_THIRD_PARTY_BEGIN
#include <pybind11/functional.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
CACHESVC_THIRD_PARTY_END

#include <chrono>
#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "client/kv_connector.h"
#include "kernels/codec.h"
#include "proto/layout.h"

namespace py = pybind11;

namespace cachesvc::client {
namespace {

class StatusException : public std::exception {
 public:
  explicit StatusException(const absl::Status& status)
      : code_(static_cast<int>(status.code())),
        text_(std::string(status.message())),
        what_("[" + absl::StatusCodeToString(status.code()) + "] " + text_) {}
  const char* what() const noexcept override { return what_.c_str(); }
  int code() const { return code_; }
  const std::string& text() const { return text_; }

 private:
  int code_;
  std::string text_;
  std::string what_;
};

void ThrowIfError(const absl::Status& status) {
  if (!status.ok()) throw StatusException(status);
}
template <typename T>
T ValueOrThrow(absl::StatusOr<T> value) {
  ThrowIfError(value.status());
  return *std::move(value);
}

// Set by cachesvc/__init__.py: (code: int, message: str) -> exception instance. Released at
// interpreter exit (a py::object must not outlive the interpreter).
py::object* error_factory = nullptr;

[[nodiscard]] absl::StatusOr<Dtype> ParseDtype(const std::string& name) {
  if (name == "fp16") return Dtype::kFp16;
  if (name == "bf16") return Dtype::kBf16;
  if (name == "fp8_e4m3") return Dtype::kFp8E4M3;
  if (name == "fp32") return Dtype::kFp32;
  return absl::InvalidArgumentError("dtype '" + name + "': not fp16, bf16, fp8_e4m3 or fp32");
}

[[nodiscard]] absl::StatusOr<kernels::CodecId> ParseCodec(const std::string& name) {
  if (name == "raw") return kernels::CodecId::kRaw;
  if (name == "tq3") return kernels::CodecId::kTq3;
  if (name == "tq4") return kernels::CodecId::kTq4;
  return absl::InvalidArgumentError("codec '" + name + "': not raw, tq3 or tq4");
}

// Token ids from any buffer of 4-byte unsigned ints (array('I'), numpy uint32), copied.
std::vector<std::uint32_t> U32s(const py::buffer& buffer, const char* what) {
  const py::buffer_info info = buffer.request();
  const std::string format = info.format;
  if (info.itemsize != 4 || (format != "I" && format != "=I" && format != "<I" && format != "L")) {
    throw StatusException(absl::InvalidArgumentError(
        std::string(what) + ": need a buffer of uint32 (format 'I'), got format '" + format +
        "' of item size " + std::to_string(info.itemsize)));
  }
  if (info.ndim != 1 || (info.shape[0] > 1 && info.strides[0] != 4)) {
    throw StatusException(
        absl::InvalidArgumentError(std::string(what) + ": need a 1-d contiguous buffer"));
  }
  std::vector<std::uint32_t> out(static_cast<std::size_t>(info.shape[0]));
  if (!out.empty()) std::memcpy(out.data(), info.ptr, out.size() * sizeof(std::uint32_t));
  return out;
}

std::vector<void*> Pointers(const std::vector<std::uintptr_t>& addresses) {
  std::vector<void*> out;
  out.reserve(addresses.size());
  for (std::uintptr_t a : addresses) out.push_back(reinterpret_cast<void*>(a));
  return out;
}

class PyConnector {
 public:
  PyConnector(const std::string& address, const std::string& token, const std::string& model_id,
              std::uint32_t num_layers, std::uint32_t num_kv_heads, std::uint32_t head_dim,
              const std::string& dtype, std::uint32_t block_tokens, std::uint32_t tp_rank,
              std::uint32_t tp_size, const std::string& attention, const std::string& codec,
              const std::string& key_mode, double rpc_timeout_s, const std::string& ucx_transports,
              bool ucx_detect_peer_failure) {
    KvConnectorOptions o;
    o.client.address = address;
    o.client.token = token;
    o.client.ucx_transports = ucx_transports;
    o.client.ucx_detect_peer_failure = ucx_detect_peer_failure;
    o.client.rpc_timeout =
        std::chrono::milliseconds(static_cast<std::int64_t>(rpc_timeout_s * 1e3));
    if (key_mode == "service") {
      o.key_mode = KeyMode::kService;
    } else if (key_mode == "client") {
      o.key_mode = KeyMode::kClient;
    } else {
      ThrowIfError(
          absl::InvalidArgumentError("key_mode '" + key_mode + "': not service or client"));
    }
    o.layout.model_id = model_id;
    o.layout.num_layers = num_layers;
    o.layout.num_kv_heads = num_kv_heads;
    o.layout.head_dim = head_dim;
    o.layout.dtype = ValueOrThrow(ParseDtype(dtype));
    o.layout.block_tokens = block_tokens;
    o.layout.tp_rank = tp_rank;
    o.layout.tp_size = tp_size;
    if (attention == "mha_gqa") {
      o.layout.attention = AttentionKind::kMhaGqa;
    } else if (attention == "mla") {
      o.layout.attention = AttentionKind::kMla;
    } else {
      ThrowIfError(absl::InvalidArgumentError("attention '" + attention + "': not mha_gqa or mla"));
    }
    o.codec = ValueOrThrow(ParseCodec(codec));
    absl::StatusOr<std::unique_ptr<KvConnector>> c;
    {
      py::gil_scoped_release release;
      c = KvConnector::Create(o);
    }
    conn_ = ValueOrThrow(std::move(c));
  }

  ~PyConnector() { Close(); }

  // Waits for a save in progress and disconnects; later calls raise FailedPrecondition.
  void Close() {
    if (!conn_) return;
    // The hooks may hold Python callables: drop them while the GIL is held.
    conn_->TEST_SetBeforeReadHook(nullptr);
    conn_->TEST_SetAfterReadHook(nullptr);
    std::unique_ptr<KvConnector> c = std::move(conn_);
    // The destructor waits for the background save; never with the GIL held.
    py::gil_scoped_release release;
    c.reset();
  }

  void RegisterPagedCache(const std::string& memory, int cuda_device, const std::string& dtype,
                          std::int64_t token_bytes, std::int64_t head_bytes,
                          std::int64_t part_bytes, std::uint64_t page_bytes,
                          const std::vector<std::vector<std::uintptr_t>>& k_pages,
                          const std::vector<std::vector<std::uintptr_t>>& v_pages) {
    PagedKvCache cache;
    if (memory == "cpu") {
      cache.memory = KvMemory::kCpu;
    } else if (memory == "cuda") {
      cache.memory = KvMemory::kCuda;
    } else {
      ThrowIfError(absl::InvalidArgumentError("memory '" + memory + "': not cpu or cuda"));
    }
    cache.cuda_device = cuda_device;
    cache.dtype = ValueOrThrow(ParseDtype(dtype));
    cache.strides = {.token_bytes = token_bytes,
                     .head_bytes = head_bytes,
                     .part_bytes = part_bytes,
                     .page_bytes = page_bytes};
    if (!v_pages.empty() && v_pages.size() != k_pages.size()) {
      ThrowIfError(absl::InvalidArgumentError("v_pages has " + std::to_string(v_pages.size()) +
                                              " layers, k_pages " +
                                              std::to_string(k_pages.size())));
    }
    for (std::size_t l = 0; l < k_pages.size(); ++l) {
      PagedKvLayer layer;
      layer.k_pages = Pointers(k_pages[l]);
      if (!v_pages.empty()) layer.v_pages = Pointers(v_pages[l]);
      cache.layers.push_back(std::move(layer));
    }
    py::gil_scoped_release release;
    ThrowIfError(conn().RegisterPagedCache(std::move(cache)));
  }

  std::vector<py::bytes> BlockKeys(const py::buffer& tokens) {
    const std::vector<std::uint32_t> t = U32s(tokens, "tokens");
    absl::StatusOr<std::vector<BlockKey>> keys;
    {
      py::gil_scoped_release release;
      keys = conn().BlockKeys(t);
    }
    std::vector<py::bytes> out;
    for (const BlockKey& k : ValueOrThrow(std::move(keys)))
      out.emplace_back(std::string(k.Bytes()));
    return out;
  }

  std::size_t LookupPrefix(const py::buffer& tokens) {
    const std::vector<std::uint32_t> t = U32s(tokens, "tokens");
    absl::StatusOr<std::size_t> n;
    {
      py::gil_scoped_release release;
      n = conn().LookupPrefix(t);
    }
    return ValueOrThrow(std::move(n));
  }

  py::tuple Load(const py::buffer& tokens, const py::buffer& page_ids) {
    const std::vector<std::uint32_t> t = U32s(tokens, "tokens");
    const std::vector<std::uint32_t> ids = U32s(page_ids, "page_ids");
    absl::StatusOr<LoadResult> r;
    {
      py::gil_scoped_release release;
      r = conn().Load(t, ids);
    }
    LoadResult got = ValueOrThrow(std::move(r));
    return py::make_tuple(got.blocks, got.tokens, got.miss_reason);
  }

  void BeginSave(const py::buffer& tokens, const py::buffer& page_ids, std::size_t first_block,
                 const std::string& session_id) {
    const std::vector<std::uint32_t> t = U32s(tokens, "tokens");
    const std::vector<std::uint32_t> ids = U32s(page_ids, "page_ids");
    py::gil_scoped_release release;
    ThrowIfError(conn().BeginSave(t, ids, {.first_block = first_block, .session_id = session_id}));
  }

  void SaveLayer(std::uint32_t layer) {
    py::gil_scoped_release release;
    ThrowIfError(conn().SaveLayer(layer));
  }

  // (blocks_committed, blocks_skipped, blocks_kept_raw, tag_error or "").
  py::tuple WaitForSave() {
    absl::StatusOr<SaveResult> r;
    {
      py::gil_scoped_release release;
      r = conn().WaitForSave();
    }
    SaveResult s = ValueOrThrow(std::move(r));
    std::string tag_error;
    if (!s.tag_status.ok()) tag_error = s.tag_status.ToString();
    return py::make_tuple(s.blocks_committed, s.blocks_skipped, s.blocks_kept_raw, tag_error);
  }

  py::dict Engine() const {
    py::dict d;
    d["engine_id"] = conn().engine().engine_id;
    d["layout_fingerprint"] = conn().engine().layout_fingerprint;
    d["raw_block_bytes"] = conn().engine().raw_block_bytes;
    return d;
  }

  std::string Codec() const { return std::string(kernels::CodecName(conn().codec())); }

  // Test hooks (client/kv_connector.h). before_read: a Python callable run after the daemon
  // granted the read leases and before the bytes are read. corrupt: flips one byte of block
  // `block`'s staging bytes after they are read, as a faulty link would; -1 clears it.
  void TestSetBeforeReadHook(std::optional<py::function> hook) {
    if (!hook) {
      conn().TEST_SetBeforeReadHook(nullptr);
      return;
    }
    auto held = std::make_shared<py::function>(std::move(*hook));
    conn().TEST_SetBeforeReadHook([held] {
      py::gil_scoped_acquire acquire;
      try {
        (*held)();
      } catch (py::error_already_set& e) {
        e.discard_as_unraisable("cachesvc connector before-read hook");
      }
    });
  }
  void TestCorruptOnRead(std::int64_t block) {
    if (block < 0) {
      conn().TEST_SetAfterReadHook(nullptr);
      return;
    }
    const auto target = static_cast<std::size_t>(block);
    conn().TEST_SetAfterReadHook([target](std::size_t b, std::span<std::byte> bytes) {
      if (b == target && !bytes.empty()) bytes[bytes.size() / 2] ^= std::byte{0x5a};
    });
  }

 private:
  KvConnector& conn() const {
    if (!conn_) ThrowIfError(absl::FailedPreconditionError("the connector is closed"));
    return *conn_;
  }

  std::unique_ptr<KvConnector> conn_;
};

}  // namespace
}  // namespace cachesvc::client

PYBIND11_MODULE(_cachesvc_connector, m) {
  using cachesvc::client::PyConnector;
  using cachesvc::client::StatusException;
  m.doc() = "cachesvc engine connector (low level; use the cachesvc package)";

  m.def("_set_error_factory", [](py::object factory) {
    if (cachesvc::client::error_factory == nullptr) {
      cachesvc::client::error_factory = new py::object();
      // Drop the reference before the interpreter goes away.
      py::module_::import("atexit").attr("register")(py::cpp_function([] {
        delete cachesvc::client::error_factory;
        cachesvc::client::error_factory = nullptr;
      }));
    }
    *cachesvc::client::error_factory = std::move(factory);
  });

  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const StatusException& e) {
      if (cachesvc::client::error_factory != nullptr && *cachesvc::client::error_factory) {
        py::object exc = (*cachesvc::client::error_factory)(e.code(), e.text());
        PyErr_SetObject(reinterpret_cast<PyObject*>(Py_TYPE(exc.ptr())), exc.ptr());
      } else {
        PyErr_SetString(PyExc_RuntimeError, e.what());
      }
    }
  });

  py::class_<PyConnector>(m, "Connector")
      .def(py::init<const std::string&, const std::string&, const std::string&, std::uint32_t,
                    std::uint32_t, std::uint32_t, const std::string&, std::uint32_t, std::uint32_t,
                    std::uint32_t, const std::string&, const std::string&, const std::string&,
                    double, const std::string&, bool>(),
           py::arg("address"), py::arg("token"), py::arg("model_id"), py::arg("num_layers"),
           py::arg("num_kv_heads"), py::arg("head_dim"), py::arg("dtype"), py::arg("block_tokens"),
           py::arg("tp_rank"), py::arg("tp_size"), py::arg("attention"), py::arg("codec"),
           py::arg("key_mode"), py::arg("rpc_timeout_s"), py::arg("ucx_transports"),
           py::arg("ucx_detect_peer_failure"))
      .def("register_paged_cache", &PyConnector::RegisterPagedCache, py::arg("memory"),
           py::arg("cuda_device"), py::arg("dtype"), py::arg("token_bytes"), py::arg("head_bytes"),
           py::arg("part_bytes"), py::arg("page_bytes"), py::arg("k_pages"), py::arg("v_pages"))
      .def("block_keys", &PyConnector::BlockKeys, py::arg("tokens"))
      .def("lookup_prefix", &PyConnector::LookupPrefix, py::arg("tokens"))
      .def("load", &PyConnector::Load, py::arg("tokens"), py::arg("page_ids"))
      .def("begin_save", &PyConnector::BeginSave, py::arg("tokens"), py::arg("page_ids"),
           py::arg("first_block"), py::arg("session_id"))
      .def("save_layer", &PyConnector::SaveLayer, py::arg("layer"))
      .def("wait_for_save", &PyConnector::WaitForSave)
      .def("close", &PyConnector::Close)
      .def("engine", &PyConnector::Engine)
      .def("codec", &PyConnector::Codec)
      .def("TEST_set_before_read_hook", &PyConnector::TestSetBeforeReadHook, py::arg("hook"))
      .def("TEST_corrupt_on_read", &PyConnector::TestCorruptOnRead, py::arg("block"));
}
