// Wire names of the status codes.
#include "switchboard/wire/status.hpp"

namespace switchboard {

std::string_view status_name(Status status) noexcept {
  switch (status) {
    case Status::ok:
      return "OK";
    case Status::no_responders:
      return "NO_RESPONDERS";
    case Status::peer_gone:
      return "PEER_GONE";
    case Status::deadline_exceeded:
      return "DEADLINE_EXCEEDED";
    case Status::idle_timeout:
      return "IDLE_TIMEOUT";
    case Status::cancelled:
      return "CANCELLED";
    case Status::refused:
      return "REFUSED";
    case Status::unauthenticated:
      return "UNAUTHENTICATED";
    case Status::permission_denied:
      return "PERMISSION_DENIED";
    case Status::resource_exhausted:
      return "RESOURCE_EXHAUSTED";
    case Status::slow_consumer:
      return "SLOW_CONSUMER";
    case Status::protocol_error:
      return "PROTOCOL_ERROR";
    case Status::internal:
      return "INTERNAL";
    case Status::application:
      return "APPLICATION";
  }
  return "UNKNOWN";
}

}  // namespace switchboard
