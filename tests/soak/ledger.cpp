// Soak ledger: parsing of event lines and the checks run once the chaos has stopped.
#include "soak/ledger.hpp"

#include <fmt/format.h>

#include <sstream>

#include "switchboard/wire/status.hpp"

namespace switchboard::soak {
namespace {

std::string status_text(int status) {
  return std::string(status_name(static_cast<Status>(status)));
}

}  // namespace

void Ledger::apply(const std::string& line, int owner) {
  std::istringstream in(line);
  std::string tag, sid, who, kind;
  in >> tag;
  std::lock_guard lock(mutex_);
  const auto now = std::chrono::steady_clock::now();
  if (tag == "OS") {
    Side side;
    in >> sid >> kind >> side.deadline_ms >> side.who;
    side.owner = owner;
    side.opened = now;
    auto& stream = stream_locked(sid);
    stream.kind = kind;
    stream.has_sender = true;
    // An ES may have arrived first only if lines were reordered, which one pipe never does.
    stream.sender = side;
  } else if (tag == "ES") {
    in >> sid;
    auto& side = stream_locked(sid).sender;
    in >> side.status >> side.verified >> side.bytes >> side.elapsed_ms >> side.delivered >>
        side.dropped;
    side.done = !in.fail();
    side.finished = now;
    if (!side.done) errors_.push_back("unparsable line: " + line);
  } else if (tag == "OR") {
    in >> sid >> who >> kind;
    auto& side = stream_locked(sid).receivers[who];
    in >> side.deadline_ms;
    side.who = who;
    side.owner = owner;
    side.opened = now;
  } else if (tag == "ER") {
    in >> sid >> who;
    auto& side = stream_locked(sid).receivers[who];
    in >> side.status >> side.verified >> side.bytes >> side.elapsed_ms;
    side.done = !in.fail();
    if (!side.done) errors_.push_back("unparsable line: " + line);
  } else if (tag == "J") {
    int channel = 0;
    in >> who >> channel;
    peers_[who] = {owner, channel};
    ++joins_;
  } else if (tag == "L") {
    in >> who;
    leaving_locked(who, now);
    peers_.erase(who);
  } else if (tag == "Q") {
    in >> who;
    leaving_locked(who, now);
  } else if (tag == "C") {
    std::string reason;
    in >> who;
    std::getline(in, reason);
    leaving_locked(who, now);
    peers_.erase(who);
    ++relay_closes_[reason.empty() ? "?" : reason.substr(1)];
  } else if (tag == "X") {
    errors_.push_back(
        fmt::format("owner {}: {}", owner, line.substr(std::min<std::size_t>(2, line.size()))));
  } else if (!line.empty()) {
    errors_.push_back("unknown line: " + line);
  }
}

void Ledger::owner_died(int owner) {
  std::lock_guard lock(mutex_);
  auto mark = [owner](Side& side) {
    if (side.owner == owner && !side.done) side.died = true;
  };
  for (auto& [sid, stream] : streams_) {
    if (stream.has_sender) mark(stream.sender);
    for (auto& [who, side] : stream.receivers) mark(side);
  }
  const auto now = std::chrono::steady_clock::now();
  for (const auto& [who, entry] : peers_) {
    if (entry.first == owner) leaving_locked(who, now);
  }
  std::erase_if(peers_, [owner](const auto& entry) { return entry.second.first == owner; });
}

void Ledger::owner_dying(int owner) {
  std::lock_guard lock(mutex_);
  const auto now = std::chrono::steady_clock::now();
  for (const auto& [who, entry] : peers_) {
    if (entry.first == owner) leaving_locked(who, now);
  }
}

std::map<std::string, std::uint64_t> Ledger::relay_closes() {
  std::lock_guard lock(mutex_);
  return relay_closes_;
}

std::size_t Ledger::unfinished() {
  std::lock_guard lock(mutex_);
  std::size_t count = 0;
  for (auto& [sid, stream] : streams_) {
    if (stream.has_sender && !stream.sender.done && !stream.sender.died) ++count;
    for (auto& [who, side] : stream.receivers) count += !side.done && !side.died;
  }
  return count;
}

std::map<int, std::set<std::string>> Ledger::live_peers() {
  std::lock_guard lock(mutex_);
  std::map<int, std::set<std::string>> result;
  for (const auto& [who, entry] : peers_) result[entry.second].insert(who);
  return result;
}

std::uint64_t Ledger::joins() {
  std::lock_guard lock(mutex_);
  return joins_;
}

Ledger::Report Ledger::check(std::chrono::milliseconds margin) {
  std::lock_guard lock(mutex_);
  Report report;
  auto violation = [&report](std::string text) {
    if (report.violations.size() < 50) report.violations.push_back(std::move(text));
  };
  for (const auto& error : errors_) violation(error);
  const auto bound = [&margin](const Side& side) {
    return side.deadline_ms == 0 ||
           side.elapsed_ms <= side.deadline_ms + static_cast<std::uint64_t>(margin.count());
  };
  for (const auto& [sid, stream] : streams_) {
    ++report.streams;
    const auto& sender = stream.sender;
    if (!stream.has_sender) {
      violation(fmt::format("stream {}: receivers but no sender record", sid));
      continue;
    }
    if (sender.died) {
      ++report.died_sides;
    } else if (!sender.done) {
      violation(
          fmt::format("stream {} ({}): sender {} never finished", sid, stream.kind, sender.who));
    } else {
      if (!bound(sender)) {
        violation(fmt::format("stream {} ({}): sender took {} ms, deadline {} ms", sid, stream.kind,
                              sender.elapsed_ms, sender.deadline_ms));
      }
      if (sender.status == 0 && !sender.verified) {
        violation(fmt::format("stream {} ({}): sender OK but bytes differ", sid, stream.kind));
      }
      if (sender.status == 0 && sender.verified) {
        // gRPC senders (Python, through the gateway) are counted apart from native ones.
        const bool via_grpc = sender.who.rfind("grpc-", 0) == 0;
        ++report.ok_by_kind[(via_grpc ? "grpc_" : "") + stream.kind];
        if (stream.kind == "req") report.bytes_verified += sender.bytes;
      } else {
        ++report.failed_by_status[status_text(sender.status)];
      }
    }
    std::uint32_t receivers_ok = 0;
    for (const auto& [who, side] : stream.receivers) {
      if (side.died) {
        ++report.died_sides;
        continue;
      }
      if (!side.done) {
        violation(fmt::format("stream {} ({}): receiver {} never finished", sid, stream.kind, who));
        continue;
      }
      if (!bound(side)) {
        violation(fmt::format("stream {} ({}): receiver {} took {} ms, deadline {} ms", sid,
                              stream.kind, who, side.elapsed_ms, side.deadline_ms));
      }
      if (side.status == 0 && !side.verified) {
        violation(
            fmt::format("stream {} ({}): receiver {} OK but bytes differ", sid, stream.kind, who));
      }
      if (side.status == 0) {
        const auto leaving = leaving_since_.find(who);
        if (leaving == leaving_since_.end() || leaving->second > sender.finished) ++receivers_ok;
        ++report.receiver_sides_ok;
        report.bytes_verified += side.bytes;
      } else {
        ++report.receiver_failed_by_status[status_text(side.status)];
      }
      // A responder cannot know of a failure after its side completed, but the reverse is a
      // lie: the sender was told OK while the responder's side failed.
      if (stream.kind == "req" && sender.done && sender.status == 0 && side.status != 0) {
        violation(fmt::format("stream {}: sender OK but responder {} ended {}", sid, who,
                              status_text(side.status)));
      }
      // A raw sender always aborts before its body is complete: the responder must see an error.
      if (stream.kind == "raw" && side.status == 0) {
        violation(
            fmt::format("stream {}: aborted raw request reached responder {} as OK", sid, who));
      }
    }
    if (stream.kind == "bc" && sender.done && sender.status == 0 &&
        receivers_ok > sender.delivered) {
      violation(
          fmt::format("stream {}: {} receivers still on the channel read it whole, summary "
                      "says delivered {}",
                      sid, receivers_ok, sender.delivered));
    }
  }
  return report;
}

}  // namespace switchboard::soak
