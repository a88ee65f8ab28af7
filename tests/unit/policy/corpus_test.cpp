// Replays setkey's recorded SPD requests (../shared/pfkey-corpus/spd-*) and
// compares our replies with the ones Linux gave in the .log: type, errno,
// length in words, and the policy ids. SPDDELETE cases are left out: their
// recorder was stateless and "deleted" policies that did not exist.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>

#include "harness.h"

namespace ipsec::policy::test {
namespace {

namespace fs = std::filesystem;

struct Expected {
  int type, errnum, len;
};

struct Case {
  std::vector<Bytes> requests;
  std::vector<Expected> replies;
  std::vector<std::uint32_t> ids;
};

Case load(const fs::path& base) {
  Case c;
  std::ifstream bin(base.string() + ".bin", std::ios::binary);
  Bytes all((std::istreambuf_iterator<char>(bin)), std::istreambuf_iterator<char>());
  for (std::size_t off = 0; off + 16 <= all.size();) {
    const std::size_t len = std::size_t{static_cast<std::uint16_t>(all[off + 4] | all[off + 5] << 8)} * 8;
    if (len == 0 || off + len > all.size()) break;
    c.requests.emplace_back(all.begin() + off, all.begin() + off + len);
    off += len;
  }
  std::ifstream log(base.string() + ".log");
  const std::regex reply(R"(^  -> c1: sadb_msg version=\d+ type=(\d+)\(\S*\) errno=(\d+) satype=\S+ len=(\d+)\()");
  const std::regex policy(R"(^  -> c1:   ext 18\(X_POLICY\).* id=(\d+))");
  std::smatch m;
  for (std::string line; std::getline(log, line);) {
    if (std::regex_search(line, m, reply)) {
      c.replies.push_back({std::stoi(m[1]), std::stoi(m[2]), std::stoi(m[3])});
    } else if (std::regex_search(line, m, policy)) {
      c.ids.push_back(static_cast<std::uint32_t>(std::stoul(m[1])));
    }
  }
  // `setkey -f` cases start with a REGISTER captured once for all of them
  // (startup-f-register); the log shows its reply, so send one first.
  if (!c.replies.empty() && c.replies.front().type == SADB_REGISTER &&
      (c.requests.empty() || c.requests.front()[1] != SADB_REGISTER)) {
    c.requests.insert(c.requests.begin(), header(SADB_REGISTER, SADB_SATYPE_UNSPEC));
  }
  return c;
}

std::vector<fs::path> spdCases() {
  std::vector<fs::path> out;
  const fs::path dir = fs::path(IPSEC_SHARED_DIR) / "pfkey-corpus";
  if (!fs::exists(dir)) return out;
  for (const auto& e : fs::directory_iterator(dir)) {
    const auto name = e.path().filename().string();
    if (e.path().extension() != ".bin" || name.rfind("spd-", 0) != 0 || name.rfind("spd-delete", 0) == 0) continue;
    out.push_back(e.path().parent_path() / e.path().stem());
  }
  std::sort(out.begin(), out.end());
  return out;
}

TEST(PfkeyCorpus, SpdCasesGetTheRepliesLinuxGave) {
  auto cases = spdCases();
  ASSERT_GE(cases.size(), 20u) << "corpus not found under " << IPSEC_SHARED_DIR;
  for (const auto& base : cases) {
    SCOPED_TRACE(base.filename().string());
    const Case c = load(base);
    ASSERT_FALSE(c.requests.empty());
    Harness h;
    auto client = h.connect();
    std::vector<Bytes> got;
    for (const auto& r : c.requests) {
      client.send(r);
      h.pump();
      for (auto& b : client.drain()) got.push_back(std::move(b));
    }
    ASSERT_EQ(got.size(), c.replies.size());
    std::vector<std::uint32_t> ids;
    // We ignore X_SEC_CTX (no LSM here, as a Linux kernel without one does),
    // so that case's reply is shorter than the recorder's.
    const bool secctx = base.filename().string().find("secctx") != std::string::npos;
    for (std::size_t i = 0; i < got.size(); ++i) {
      sadb_msg m{};
      std::memcpy(&m, got[i].data(), sizeof m);
      EXPECT_EQ(m.sadb_msg_type, c.replies[i].type) << "reply " << i;
      EXPECT_EQ(m.sadb_msg_errno, c.replies[i].errnum) << "reply " << i;
      // REGISTER lists what our broker runs, not what Linux does.
      if (m.sadb_msg_type != SADB_REGISTER && !secctx) {
        EXPECT_EQ(m.sadb_msg_len, c.replies[i].len) << "reply " << i;
      }
      auto p = pfkey::parse(got[i], pfkey::Origin::kService);
      ASSERT_TRUE(std::holds_alternative<pfkey::ParsedMessage>(p)) << "reply " << i << " does not parse";
      const auto& pm = std::get<pfkey::ParsedMessage>(p);
      if (pm.policy()) ids.push_back(pm.policy()->id);
    }
    EXPECT_EQ(ids, c.ids);
  }
}

}  // namespace
}  // namespace ipsec::policy::test
