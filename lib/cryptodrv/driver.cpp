// The driver registry (see driver.h). Runs only in ipsec-crypto.
#include "cryptodrv/driver.h"

#include <algorithm>

namespace ipsec::cryptodrv {

DriverRegistry DriverRegistry::withDefaultDrivers(std::string_view preferred) {
  std::vector<std::unique_ptr<Driver>> drivers;
  drivers.push_back(makeOpenSslDriver());
  drivers.push_back(makeSodiumDriver());
  // A stable partition keeps the default order among the others.
  std::stable_partition(drivers.begin(), drivers.end(), [&](const auto& d) { return d->name() == preferred; });
  DriverRegistry registry;
  for (auto& d : drivers) registry.add(std::move(d));
  return registry;
}

bool legacyAllowed(const TransformSpec& spec, std::string* error) {
  if (spec.allowLegacy) return true;
  for (const AlgorithmInfo* a :
       {findAlgorithm(AlgorithmKind::kEncrypt, spec.encAlg), findAlgorithm(AlgorithmKind::kAuth, spec.authAlg)}) {
    if (a != nullptr && a->legacy) {
      if (error) {
        *error = std::string(a->name) + " is a legacy algorithm, refused unless net.inet.ipsec.allow_legacy is set";
      }
      return false;
    }
  }
  return true;
}

void DriverRegistry::add(std::unique_ptr<Driver> driver) {
  if (driver) drivers_.push_back(std::move(driver));
}

const Driver* DriverRegistry::find(const TransformSpec& spec) const noexcept {
  for (const auto& d : drivers_)
    if (d->supports(spec)) return d.get();
  return nullptr;
}

const Driver* DriverRegistry::driver(std::string_view name) const noexcept {
  for (const auto& d : drivers_)
    if (d->name() == name) return d.get();
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
