// DrainRegistry: the calls the relay asks to end once it drains (Requests and Respond).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <utility>
#include <vector>

namespace switchboard::gateway {

/// Each drainable call registers how to ask it to drain, and stays registered while its
/// Registration lives. Thread-safe.
class DrainRegistry {
public:
  /// Unregisters on reset or destruction. Moves; owned by the call, used on its Serial.
  class Registration {
  public:
    Registration() = default;
    Registration(DrainRegistry* registry, std::uint64_t id) noexcept
        : registry_(registry), id_(id) {}
    Registration(Registration&& other) noexcept
        : registry_(std::exchange(other.registry_, nullptr)), id_(other.id_) {}
    Registration& operator=(Registration&& other) noexcept {
      if (this != &other) {
        reset();
        registry_ = std::exchange(other.registry_, nullptr);
        id_ = other.id_;
      }
      return *this;
    }
    ~Registration() { reset(); }

    void reset() {
      if (auto* registry = std::exchange(registry_, nullptr)) registry->remove(id_);
    }

  private:
    DrainRegistry* registry_ = nullptr;
    std::uint64_t id_ = 0;
  };

  /// Registers `call`, whose `drain()` runs on its Serial when the relay drains. The registry
  /// holds it weakly: a call that is gone is skipped.
  template <class Call>
  Registration add(const std::shared_ptr<Call>& call) {
    std::lock_guard lock(mutex_);
    const auto id = next_id_++;
    drains_.emplace(id, [weak = std::weak_ptr<Call>(call)] {
      if (auto self = weak.lock()) self->serial_.deliver([self] { self->drain(); }, self);
    });
    return Registration(this, id);
  }

  /// What asks each registered call to drain, to be run outside the registry's lock.
  std::vector<std::function<void()>> drains() {
    std::lock_guard lock(mutex_);
    std::vector<std::function<void()>> drains;
    drains.reserve(drains_.size());
    for (const auto& [id, drain] : drains_) drains.push_back(drain);
    return drains;
  }

private:
  void remove(std::uint64_t id) {
    std::lock_guard lock(mutex_);
    drains_.erase(id);
  }

  std::mutex mutex_;
  std::unordered_map<std::uint64_t, std::function<void()>> drains_;
  std::uint64_t next_id_ = 1;
};

}  // namespace switchboard::gateway
