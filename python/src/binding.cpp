// ringattn._C: a thin pybind11 binding over the public C++ API
// (ringattn/ringattn.hpp). It takes buffers as addresses (tensor.data_ptr())
// and the CUDA stream as an integer (torch.cuda.current_stream().cuda_stream),
// so it needs no torch header: the Python layer (ringattn/torch.py) checks
// the tensors, allocates outputs and drives autograd. Nothing here copies
// the runtime's logic.
//
// Errors are values here too: every call returns None on success or
// (code, message) with the runtime's StatusCode and message; ringattn/_errors.py
// turns them into Python exceptions. The GIL is released around every call
// that may communicate or compute.
#include <mpi.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "ringattn/names.hpp"
#include "ringattn/ringattn.hpp"

namespace py = pybind11;
using ringattn::Status;
using ringattn::StatusCode;

namespace {

// None for success, (int code, message) otherwise.
py::object result(const Status& s) {
  if (s.ok()) return py::none();
  return py::make_tuple(int(s.code()), s.message());
}

Status mpi_status(int err, const char* what) {
  if (err == MPI_SUCCESS) return Status::Ok();
  char buf[MPI_MAX_ERROR_STRING];
  int len = 0;
  std::string text = MPI_Error_string(err, buf, &len) == MPI_SUCCESS ? std::string(buf, len) : "MPI error " + std::to_string(err);
  return Status(StatusCode::kCommError, std::string(what) + " failed: " + text);
}

bool mpi_finalized() {
  int done = 0;
  MPI_Finalized(&done);
  return done != 0;
}

bool g_we_initialized = false;

// MPI is initialized once per process: by mpi4py when it is imported first,
// else here. MPI_THREAD_MULTIPLE as mpi4py asks: with CUDA tensors torch runs
// the backward on its autograd device thread, not the thread of the forward.
py::object mpi_init() {
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (mpi_finalized()) return result(Status(StatusCode::kCommError, "MPI is already finalized (nothing can run after MPI_Finalize)"));
  if (!initialized) {
    int provided = 0;
    Status st = mpi_status(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_MULTIPLE, &provided), "MPI_Init_thread");
    if (!st.ok()) return result(st);
    g_we_initialized = true;
  }
  return py::none();
}

// Only what this module initialized, and only once.
void mpi_finalize() {
  if (g_we_initialized && !mpi_finalized()) MPI_Finalize();
  g_we_initialized = false;
}

int mpi_thread_level() {
  int level = -1;
  MPI_Query_thread(&level);
  return level;
}

// A communicator of the user's (MPI_COMM_WORLD, or an mpi4py one given by
// its Fortran handle, comm.py2f(): Fortran handles mean the same in every
// binding of one MPI library, whatever ABI mpi4py was built for), duplicated
// so that the binding's agreements never interleave with the user's own
// collectives on it.
class Comm {
 public:
  // Collective over the user's communicator.
  static py::object create(py::object fortran_handle, std::shared_ptr<Comm>* out) {
    MPI_Comm user = MPI_COMM_WORLD;
    if (!fortran_handle.is_none()) user = MPI_Comm_f2c(MPI_Fint(fortran_handle.cast<long long>()));
    if (user == MPI_COMM_NULL) return result(ringattn::InvalidArgument("the communicator is MPI_COMM_NULL"));
    auto c = std::make_shared<Comm>();
    Status st = mpi_status(MPI_Comm_dup(user, &c->comm_), "MPI_Comm_dup");
    if (st.ok()) st = mpi_status(MPI_Comm_set_errhandler(c->comm_, MPI_ERRORS_RETURN), "MPI_Comm_set_errhandler");
    if (st.ok()) st = mpi_status(MPI_Comm_rank(c->comm_, &c->rank_), "MPI_Comm_rank");
    if (st.ok()) st = mpi_status(MPI_Comm_size(c->comm_, &c->size_), "MPI_Comm_size");
    if (!st.ok()) return result(st);
    *out = std::move(c);
    return py::none();
  }
  Comm() = default;
  Comm(const Comm&) = delete;
  Comm& operator=(const Comm&) = delete;
  ~Comm() { close(); }
  void close() {
    if (comm_ != MPI_COMM_NULL && !mpi_finalized()) MPI_Comm_free(&comm_);
    comm_ = MPI_COMM_NULL;
  }
  MPI_Comm handle() const { return comm_; }
  int rank() const { return rank_; }
  int size() const { return size_; }

 private:
  MPI_Comm comm_ = MPI_COMM_NULL;
  int rank_ = 0, size_ = 1;
};

Status closed(const char* what) {
  return Status(StatusCode::kInvalidArgument, std::string(what) + ": the communicator or context was closed (at exit or by clear_cache())");
}

using Branches = std::vector<std::pair<int64_t, int64_t>>;

ringattn::Config make_config(const Branches& branches, bool causal, double scale, int head_offsets, int dtype,
                             int backend, int transport, int64_t heads, int64_t head_dim, double timeout_seconds,
                             bool deterministic) {
  ringattn::Config cfg;
  for (const auto& [w, r] : branches) cfg.branches.push_back({w, r});
  cfg.causal = causal;
  cfg.scale = scale;
  cfg.head_offsets = ringattn::HeadOffsets(head_offsets);
  cfg.dtype = ringattn::DType(dtype);
  cfg.backend = ringattn::Backend(backend);
  cfg.transport = ringattn::Transport(transport);
  cfg.heads = heads;
  cfg.head_dim = head_dim;
  cfg.timeout_seconds = timeout_seconds;
  cfg.deterministic = deterministic;
  return cfg;
}

// Collective, once per call before the context is looked up: every rank
// passes its own check of the tensors (code 0 = fine) and the config and
// shape of the call, and all get the lowest failing rank's error ("rank R:
// ..." with several ranks), or kMismatch if they disagree on config (the
// runtime's config_hash, plus the timeout, which only the cache key holds)
// or shape. So every rank's cache of contexts takes the same path: a rank
// that found its context could otherwise run a forward while another is
// creating one.
py::object agree(const std::shared_ptr<Comm>& comm, int code, const std::string& message, const Branches& branches,
                 bool causal, double scale, int head_offsets, int dtype, int backend, int transport, int64_t heads,
                 int64_t head_dim, double timeout_seconds, bool deterministic, int64_t batch, int64_t seq) {
  if (comm->handle() == MPI_COMM_NULL) return result(closed("agree"));
  Status local = code == 0 ? Status::Ok() : Status(StatusCode(code), message);
  uint64_t key = 0, timeout_bits = 0;
  if (local.ok()) {
    key = ringattn::config_hash(make_config(branches, causal, scale, head_offsets, dtype, backend, transport, heads,
                                            head_dim, timeout_seconds, deterministic));
    static_assert(sizeof(double) == sizeof(uint64_t), "");
    std::memcpy(&timeout_bits, &timeout_seconds, sizeof(double));
    key ^= timeout_bits * 0x9e3779b97f4a7c15ull;
  }
  Status agreed;
  {
    py::gil_scoped_release nogil;
    agreed = ringattn::all_ranks(comm->handle(), local, key, ringattn::Shape{batch, seq});
  }
  return result(agreed);
}

// A ringattn::Context over a Comm. Addresses are integers (data_ptr()).
class RingContext {
 public:
  RingContext() = default;
  RingContext(const RingContext&) = delete;
  RingContext& operator=(const RingContext&) = delete;
  ~RingContext() {
    // After MPI_Finalize the context's communicator cannot be freed: leak it
    // (the process is ending) rather than call MPI after finalize.
    if (ctx_ && mpi_finalized()) (void)ctx_.release();
  }
  void close() {
    if (ctx_ && mpi_finalized()) (void)ctx_.release();
    ctx_.reset();
  }

  // Collective over comm.
  static py::object create(const std::shared_ptr<Comm>& comm, const Branches& branches,
                           bool causal, double scale, int head_offsets, int dtype, int backend, int transport,
                           int64_t heads, int64_t head_dim, double timeout_seconds, bool deterministic,
                           std::shared_ptr<RingContext>* out) {
    if (comm->handle() == MPI_COMM_NULL) return result(closed("Context.create"));
    const ringattn::Config cfg = make_config(branches, causal, scale, head_offsets, dtype, backend, transport, heads,
                                             head_dim, timeout_seconds, deterministic);
    auto c = std::make_shared<RingContext>();
    Status st;
    {
      py::gil_scoped_release nogil;
      st = ringattn::Context::create(cfg, comm->handle(), &c->ctx_);
    }
    if (!st.ok()) return result(st);
    *out = std::move(c);
    return py::none();
  }

  py::object forward(int64_t batch, int64_t seq, uintptr_t q, uintptr_t k, uintptr_t v, uintptr_t o, uintptr_t lse,
                     uintptr_t stream) {
    if (!ctx_) return result(closed("forward"));
    Status st;
    {
      py::gil_scoped_release nogil;
      st = ctx_->forward({batch, seq}, ptr(q), ptr(k), ptr(v), ptr(o), reinterpret_cast<float*>(lse), ptr(stream));
    }
    return result(st);
  }

  py::object backward(int64_t batch, int64_t seq, uintptr_t q, uintptr_t k, uintptr_t v, uintptr_t o, uintptr_t lse,
                      uintptr_t dout, uintptr_t dq, uintptr_t dk, uintptr_t dv, uintptr_t stream) {
    if (!ctx_) return result(closed("backward"));
    Status st;
    {
      py::gil_scoped_release nogil;
      st = ctx_->backward({batch, seq}, ptr(q), ptr(k), ptr(v), ptr(o), reinterpret_cast<const float*>(lse), ptr(dout),
                          ptr(dq), ptr(dk), ptr(dv), ptr(stream));
    }
    return result(st);
  }

  py::object synchronize() {
    if (!ctx_) return result(closed("synchronize"));
    Status st;
    {
      py::gil_scoped_release nogil;
      st = ctx_->synchronize();
    }
    return result(st);
  }

  py::object prefetch(int64_t batch, int64_t seq) {
    if (!ctx_) return result(closed("prefetch"));
    return result(ctx_->prefetch({batch, seq}));
  }

  int rank() const { return ctx_ ? ctx_->rank() : -1; }
  int world_size() const { return ctx_ ? ctx_->world_size() : -1; }

  py::dict stats() const {
    py::dict d;
    if (!ctx_) return d;
    const ringattn::Stats& s = ctx_->stats();
    d["forwards"] = s.forwards;
    d["backwards"] = s.backwards;
    d["last_forward_ms"] = s.last_forward_ms;
    d["last_bytes_sent"] = s.last_bytes_sent;
    d["last_bytes_ideal"] = s.last_bytes_ideal;
    d["last_bytes_received"] = s.last_bytes_received;
    d["last_plan_ms"] = s.last_plan_ms;
    d["last_plan_tiles"] = s.last_plan_tiles;
    d["last_packed_tiles"] = s.last_packed_tiles;
    d["cache_device_hits"] = s.cache.device_hits;
    d["cache_host_hits"] = s.cache.host_hits;
    d["cache_misses"] = s.cache.misses;
    return d;
  }

 private:
  static void* ptr(uintptr_t a) { return reinterpret_cast<void*>(a); }
  std::unique_ptr<ringattn::Context> ctx_;
};

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "ringattn's C++ API (ringattn/ringattn.hpp) for ringattn.torch; calls return None or (code, message)";
  m.def("version", [] { return std::string(ringattn::version()); });
  m.def("mpi_init", &mpi_init, "Initialize MPI (MPI_THREAD_MULTIPLE) unless it already is");
  m.def("mpi_finalize", &mpi_finalize, "Finalize MPI if this module initialized it");
  m.def("mpi_thread_level", &mpi_thread_level);
  m.def("status_code_name", [](int c) { return std::string(ringattn::status_code_name(StatusCode(c))); });
  m.def("named_branches", [](const std::string& name, int64_t seq) -> py::object {
    std::vector<ringattn::Branch> b;
    Status st = ringattn::named_branches(name, seq, &b);
    if (!st.ok()) return py::make_tuple(int(st.code()), st.message());
    py::list out;
    for (const auto& x : b) out.append(py::make_tuple(x.w, x.r));
    return std::move(out);
  });
  m.def("named_config_names", [] { return ringattn::named_config_names(); });
  m.attr("STATUS_INVALID_ARGUMENT") = int(StatusCode::kInvalidArgument);
  m.attr("STATUS_MISMATCH") = int(StatusCode::kMismatch);
  m.attr("STATUS_UNSUPPORTED") = int(StatusCode::kUnsupported);

  py::class_<Comm, std::shared_ptr<Comm>>(m, "Comm")
      .def_static("create", [](py::object handle) -> py::object {
        std::shared_ptr<Comm> c;
        py::object st = Comm::create(handle, &c);
        if (!st.is_none()) return st;
        return py::cast(c);
      }, py::arg("fortran_handle") = py::none(),
         "Collective: duplicate MPI_COMM_WORLD (None) or the communicator of a Fortran handle (mpi4py comm.py2f()). "
         "Returns a Comm or (code, message).")
      .def_property_readonly("rank", &Comm::rank)
      .def_property_readonly("size", &Comm::size)
      .def("close", &Comm::close)
      .def("agree", &agree, "Collective: (code, message) of this rank's checks, the call's config and batch, seq; "
           "returns None or the agreed (code, message)");

  py::class_<RingContext, std::shared_ptr<RingContext>>(m, "Context")
      .def_static("create", [](const std::shared_ptr<Comm>& comm, const Branches& branches,
                               bool causal, double scale, int head_offsets, int dtype, int backend, int transport,
                               int64_t heads, int64_t head_dim, double timeout_seconds, bool deterministic) -> py::object {
        std::shared_ptr<RingContext> c;
        py::object st = RingContext::create(comm, branches, causal, scale, head_offsets, dtype, backend, transport, heads,
                                          head_dim, timeout_seconds, deterministic, &c);
        if (!st.is_none()) return st;
        return py::cast(c);
      }, "Collective: Context::create over comm. Returns a Context or (code, message).")
      .def("forward", &RingContext::forward)
      .def("backward", &RingContext::backward)
      .def("synchronize", &RingContext::synchronize)
      .def("prefetch", &RingContext::prefetch)
      .def("close", &RingContext::close)
      .def_property_readonly("rank", &RingContext::rank)
      .def_property_readonly("world_size", &RingContext::world_size)
      .def("stats", &RingContext::stats);
}
