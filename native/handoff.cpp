// Each thread's batch of hand-offs between sessions, and the pool of lists they travel in.
#include "native/handoff.hpp"

#include <mutex>

#include "native/session.hpp"

namespace switchboard::core::net {
namespace {

// Delivery lists travel from the thread that gathers them to the target's thread and come
// back here once run, so a steady flow of hand-offs allocates nothing. Bounded: a few lists of
// modest capacity are kept, the rest freed.
class ListPool {
public:
  ListPool() {
    // Lists for the hand-offs of a few busy flows at once, made before the first flow.
    free_.resize(kFirstLists);
    for (auto& list : free_) list.reserve(kFirstCapacity);
  }

  DeliveryList take() {
    std::lock_guard lock(mutex_);
    if (free_.empty()) return {};
    DeliveryList list = std::move(free_.back());
    free_.pop_back();
    return list;
  }
  void give_back(DeliveryList list) {
    list.clear();
    if (list.capacity() > kMaxKeptCapacity) return;
    std::lock_guard lock(mutex_);
    if (free_.size() < kMaxKeptLists) free_.push_back(std::move(list));
  }

private:
  static constexpr std::size_t kFirstLists = 8;
  static constexpr std::size_t kFirstCapacity = 16;
  static constexpr std::size_t kMaxKeptLists = 64;
  static constexpr std::size_t kMaxKeptCapacity = 256;
  std::mutex mutex_;
  std::vector<DeliveryList> free_;
};

ListPool& delivery_lists() {
  static ListPool pool;
  return pool;
}

}  // namespace

Session& Delivery::target() const noexcept { return stream ? stream->session() : *session; }

HandoffBatch::HandoffBatch() {
  // Sized once per thread for a busy scope, so that a scope reaching more sessions than any
  // before it rarely grows them in the middle of a flow.
  constexpr std::size_t kSessionsPerScope = 64;
  targets_.reserve(kSessionsPerScope);
  running_.reserve(kSessionsPerScope);
  flushes_.reserve(kSessionsPerScope);
  flushing_.reserve(kSessionsPerScope);
}

HandoffBatch& HandoffBatch::this_thread() noexcept {
  thread_local HandoffBatch batch;
  return batch;
}

DeliveryList HandoffBatch::take_list() { return delivery_lists().take(); }

void HandoffBatch::give_back(DeliveryList list) { delivery_lists().give_back(std::move(list)); }

HandoffBatch::Scope::Scope() noexcept : owner_(!this_thread().open_) { this_thread().open_ = true; }

HandoffBatch::Scope::~Scope() {
  if (owner_) this_thread().open_ = false;
}

void HandoffBatch::Scope::flush() {
  if (!owner_) return;
  this_thread().flush();
  owner_ = false;
}

void HandoffBatch::hand_off(Delivery delivery) {
  auto& batch = this_thread();
  if (!batch.open_) {
    Session& target = delivery.target();
    auto deliveries = take_list();
    deliveries.push_back(std::move(delivery));
    target.post_deliveries(std::move(deliveries));
    return;
  }
  batch.add(std::move(delivery));
}

void HandoffBatch::add(Delivery delivery) {
  Session* target = &delivery.target();
  for (auto& [session, deliveries] : targets_) {
    if (session == target) {
      deliveries.push_back(std::move(delivery));
      return;
    }
  }
  targets_.emplace_back(target, take_list()).second.push_back(std::move(delivery));
}

void HandoffBatch::flush() {
  // What runs here may hand off and wake writers again; those are handled in the next round.
  // The rounds are bounded: what is left after them is posted, as it would be without a batch.
  constexpr int kMaxRounds = 8;
  for (int round = 0; !targets_.empty() || !flushes_.empty(); ++round) {
    const bool last = round + 1 == kMaxRounds;
    running_.swap(targets_);
    for (auto& [session, deliveries] : running_) {
      if (!last && session->takes_deliveries_inline()) {
        session->run_deliveries(deliveries);
        give_back(std::move(deliveries));
      } else {
        session->post_deliveries(std::move(deliveries));
      }
    }
    running_.clear();
    flushing_.swap(flushes_);
    for (auto& session : flushing_) session->flush_woken_writer(!last);
    flushing_.clear();
    if (last) break;
  }
  open_ = false;
}

}  // namespace switchboard::core::net
