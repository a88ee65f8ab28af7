// The driver registry (see driver.h). Runs only in ipsec-crypto.
#include "cryptodrv/driver.h"

#include <algorithm>

namespace ipsec::cryptodrv {

DriverRegistry DriverRegistry::withDefaultDrivers() {
  DriverRegistry registry;
  registry.add(makeOpenSslDriver());
  return registry;
}

void DriverRegistry::add(std::unique_ptr<Driver> driver) {
  if (driver) drivers_.push_back(std::move(driver));
}

const Driver* DriverRegistry::find(const TransformSpec& spec) const noexcept {
  for (const auto& d : drivers_)
    if (d->supports(spec)) return d.get();
  return nullptr;
}

std::unique_ptr<Transform> DriverRegistry::makeTransform(const TransformSpec& spec, std::string* error) const {
  const Driver* driver = find(spec);
  if (driver == nullptr) {
    if (error) {
      *error = "no driver runs encryption algorithm " + std::to_string(spec.encAlg) + " with authentication algorithm " +
               std::to_string(spec.authAlg);
    }
    return nullptr;
  }
  return driver->create(spec, error);
}

std::vector<AlgorithmInfo> DriverRegistry::algorithms(AlgorithmKind kind) const {
  std::vector<AlgorithmInfo> out;
  for (const auto& d : drivers_) {
    for (const auto& a : d->algorithms()) {
      if (a.kind != kind) continue;
      const bool known = std::any_of(out.begin(), out.end(), [&](const AlgorithmInfo& b) { return b.id == a.id; });
      if (!known) out.push_back(a);
    }
  }
  std::sort(out.begin(), out.end(), [](const AlgorithmInfo& a, const AlgorithmInfo& b) { return a.id < b.id; });
  return out;
}

std::unique_ptr<Transform> makeTransform(const TransformSpec& spec, std::string* error) {
  static const DriverRegistry registry = DriverRegistry::withDefaultDrivers();
  return registry.makeTransform(spec, error);
}

}  // namespace ipsec::cryptodrv
