// The C side of src/dist/group.rs: PyTorch's own c10d process groups (Gloo, and NCCL when
// LibTorch has CUDA), reached from Rust through a few C functions. Tensors cross as the
// `at::Tensor*` that tch hands out, so collectives run in place on the training tensors.
//
// Every function catches what c10d throws and returns it as a message: a peer that died or a
// timeout must become an error the trainer reports, never an abort.

#include <cstdlib>
#include <cstring>
#include <string>

#include <ATen/ATen.h>
#include <torch/csrc/distributed/c10d/Backend.hpp>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#ifdef RLHF_WITH_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

namespace {

struct Group {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::Backend> backend;
};

char* copy_message(const char* message) {
  char* copy = static_cast<char*>(std::malloc(std::strlen(message) + 1));
  std::strcpy(copy, message);
  return copy;
}

// Runs `body`; on an exception stores its message in `*error` and returns false.
template <typename F>
bool guarded(char** error, F body) {
  try {
    body();
    return true;
  } catch (const c10::Error& e) {
    *error = copy_message(e.what_without_backtrace());
  } catch (const std::exception& e) {
    *error = copy_message(e.what());
  } catch (...) {
    *error = copy_message("unknown C++ exception");
  }
  return false;
}

c10::intrusive_ptr<c10d::Backend> new_gloo(
    const c10::intrusive_ptr<c10d::Store>& store,
    int rank,
    int world,
    std::chrono::milliseconds timeout) {
  auto options = c10d::ProcessGroupGloo::Options::create(timeout);
  // As torch.distributed does: GLOO_SOCKET_IFNAME picks the network interface, else the
  // address this machine's hostname resolves to (loopback when it resolves to none).
  const char* interface = std::getenv("GLOO_SOCKET_IFNAME");
  options->devices.push_back(
      interface != nullptr && *interface != '\0'
          ? c10d::ProcessGroupGloo::createDeviceForInterface(interface)
          : c10d::ProcessGroupGloo::createDefaultDevice());
  return c10::make_intrusive<c10d::ProcessGroupGloo>(store, rank, world, options);
}

#ifdef RLHF_WITH_NCCL
c10::intrusive_ptr<c10d::Backend> new_nccl(
    const c10::intrusive_ptr<c10d::Store>& store,
    int rank,
    int world,
    std::chrono::milliseconds timeout) {
  auto options = c10d::ProcessGroupNCCL::Options::create();
  options->timeout = timeout;
  return c10::make_intrusive<c10d::ProcessGroupNCCL>(store, rank, world, options);
}
#endif

} // namespace

extern "C" {

int rlhf_dist_has_nccl() {
#ifdef RLHF_WITH_NCCL
  return 1;
#else
  return 0;
#endif
}

// Connects to (or, with `is_server`, hosts) the TCPStore at host:port, scopes its keys under
// `prefix`, and creates the `backend` ("gloo" or "nccl") process group on it.
void* rlhf_dist_new(
    const char* backend,
    const char* host,
    uint16_t port,
    int is_server,
    const char* prefix,
    int rank,
    int world,
    int64_t timeout_ms,
    char** error) {
  Group* group = nullptr;
  guarded(error, [&] {
    const std::chrono::milliseconds timeout(timeout_ms);
    c10d::TCPStoreOptions options;
    options.port = port;
    options.isServer = is_server != 0;
    options.numWorkers = world;
    // Every rank counts itself in; the host waits until all have (as torch.distributed does).
    options.waitWorkers = true;
    options.timeout = timeout;
    auto tcp = c10::make_intrusive<c10d::TCPStore>(host, options);
    auto store = c10::make_intrusive<c10d::PrefixStore>(prefix, tcp);
    const std::string name(backend);
    c10::intrusive_ptr<c10d::Backend> created;
    if (name == "gloo") {
      created = new_gloo(store, rank, world, timeout);
#ifdef RLHF_WITH_NCCL
    } else if (name == "nccl") {
      created = new_nccl(store, rank, world, timeout);
#endif
    } else {
      throw std::runtime_error("this LibTorch has no `" + name + "` backend");
    }
    group = new Group{tcp, created};
  });
  return group;
}

void rlhf_dist_free(void* group) {
  delete static_cast<Group*>(group);
}

void rlhf_dist_free_error(char* error) {
  std::free(error);
}

// In place on every rank: `op` 0 sums, 1 takes the maximum.
int rlhf_dist_all_reduce(void* group, void* tensor, int op, char** error) {
  return guarded(error, [&] {
    std::vector<at::Tensor> tensors{*static_cast<at::Tensor*>(tensor)};
    c10d::AllreduceOptions options;
    options.reduceOp = op == 1 ? c10d::ReduceOp::MAX : c10d::ReduceOp::SUM;
    static_cast<Group*>(group)->backend->allreduce(tensors, options)->wait();
  });
}

// In place: every rank ends with `root`'s values.
int rlhf_dist_broadcast(void* group, void* tensor, int root, char** error) {
  return guarded(error, [&] {
    std::vector<at::Tensor> tensors{*static_cast<at::Tensor*>(tensor)};
    c10d::BroadcastOptions options;
    options.rootRank = root;
    static_cast<Group*>(group)->backend->broadcast(tensors, options)->wait();
  });
}

} // extern "C"
