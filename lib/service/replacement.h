// The descriptors of a DataPlaneRestarted message, taken by the table:
// ipsecd sends the replacements of a process's OnClose::kAwaitReplacement
// entries in table order (services/ipsecd/child_fds.cpp, replacements), and
// the process takes each by its enum, as it took them at start (takeFd),
// never by a position of its own reckoning. Header-only: keydb's and
// policy's handlers and their tests include it without the service skeleton.
#pragma once

#include <cstddef>
#include <utility>
#include <vector>

#include "control/unique_fd.h"
#include "proto/fd_layout.h"

namespace ipsec::service {

// How many replacements the process of `Id` awaits after a data-plane restart.
template <class Id>
constexpr std::size_t replacementCount(Id which) {
  std::size_t n = 0;
  for (const auto& e : fdlayout::layoutOf(which).entries) n += e.onClose == fdlayout::OnClose::kAwaitReplacement;
  return n;
}

// Takes the replacement of entry `which` out of `fds`; empty if `which` is no
// awaited entry or `fds` does not hold exactly the awaited count (the caller
// refuses the message: ipsecd and the child disagree on the table).
template <class Id>
control::UniqueFd takeReplacement(Id which, std::vector<control::UniqueFd>& fds) {
  std::size_t position = 0;
  bool awaited = false;
  for (const auto& e : fdlayout::layoutOf(which).entries) {
    if (e.onClose != fdlayout::OnClose::kAwaitReplacement) continue;
    if (e.id == which) {
      awaited = true;
      break;
    }
    ++position;
  }
  if (!awaited || fds.size() != replacementCount(which)) return control::UniqueFd();
  return std::move(fds[position]);
}

}  // namespace ipsec::service
