// The transport of a one-rank ring: no step has anything to exchange, and
// nothing is host-driven, so a forward on asynchronous lanes returns in flight.
#include "transport/transport.hpp"

namespace ringattn {
namespace {

class NoTransport final : public RingTransport {
 public:
  const char* name() const override { return "none (one rank)"; }
  bool host_driven() const override { return false; }
  Status post(const Exchange& x) override {
    return Status(StatusCode::kInternal, "ring step " + std::to_string(x.step) + ": a one-rank ring has no peer");
  }
  Status complete(const Exchange&, double) override { return Status::Ok(); }
};

}  // namespace

std::unique_ptr<RingTransport> make_no_transport() { return std::make_unique<NoTransport>(); }

}  // namespace ringattn
