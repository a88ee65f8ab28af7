// See testbed.h.
#include "testbed.h"

#include <fcntl.h>
#include <net/if.h>
#include <sched.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <stdexcept>
#include <thread>

namespace outer_io {

bool runCommand(const std::vector<std::string>& argv) {
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  const pid_t pid = fork();
  if (pid < 0) return false;
  if (pid == 0) {
    const int devNull = open("/dev/null", O_WRONLY);
    if (devNull >= 0) dup2(devNull, STDOUT_FILENO);  // `ip` is quiet on success; its errors stay on stderr
    execvp(args[0], args.data());
    _exit(127);
  }
  int status = 0;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (waitpid(pid, &status, WNOHANG) == 0) {
    if (std::chrono::steady_clock::now() > deadline) {
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
      return false;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

void enterNamespace(const std::string& name) {
  const std::string path = "/run/netns/" + name;
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw std::runtime_error("open " + path + ": " + std::strerror(errno));
  const int rc = setns(fd, CLONE_NEWNET);
  const int saved = errno;
  close(fd);
  if (rc != 0) throw std::runtime_error("setns " + name + ": " + std::strerror(saved));
}

namespace {

// The veth end's index and MAC, read in its namespace by a thread of our own
// (setns moves only the calling thread; the main thread stays where it is).
void readInterface(const std::string& ns, const std::string& ifname, int& index, std::array<std::uint8_t, 6>& mac) {
  std::string error;
  std::thread([&] {
    try {
      enterNamespace(ns);
      const int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
      if (fd < 0) throw std::runtime_error(std::string("socket: ") + std::strerror(errno));
      ifreq ifr{};
      std::strncpy(ifr.ifr_name, ifname.c_str(), IFNAMSIZ - 1);
      const bool ok = ioctl(fd, SIOCGIFHWADDR, &ifr) == 0;
      std::memcpy(mac.data(), ifr.ifr_hwaddr.sa_data, mac.size());
      close(fd);
      if (!ok) throw std::runtime_error("SIOCGIFHWADDR " + ifname);
      index = static_cast<int>(if_nametoindex(ifname.c_str()));
      if (index == 0) throw std::runtime_error("if_nametoindex " + ifname);
    } catch (const std::exception& e) {
      error = e.what();
    }
  }).join();
  if (!error.empty()) throw std::runtime_error(error);
}

}  // namespace

Testbed::Testbed() {
  const std::string tag = std::to_string(getpid());
  senderNs_ = "oio-" + tag + "-s";
  receiverNs_ = "oio-" + tag + "-r";
  senderIf_ = "oio" + tag + "s";  // at most 3 + 7 + 1 characters: under IFNAMSIZ
  receiverIf_ = "oio" + tag + "r";
  const std::vector<std::vector<std::string>> steps = {
      {"ip", "netns", "add", senderNs_},
      {"ip", "netns", "add", receiverNs_},
      {"ip", "link", "add", senderIf_, "netns", senderNs_, "type", "veth", "peer", "name", receiverIf_, "netns",
       receiverNs_},
      {"ip", "-n", senderNs_, "addr", "add", "192.0.2.1/24", "dev", senderIf_},
      {"ip", "-n", receiverNs_, "addr", "add", "192.0.2.2/24", "dev", receiverIf_},
      {"ip", "-n", senderNs_, "link", "set", senderIf_, "up"},
      {"ip", "-n", receiverNs_, "link", "set", receiverIf_, "up"},
      {"ip", "-n", senderNs_, "link", "set", "lo", "up"},
      {"ip", "-n", receiverNs_, "link", "set", "lo", "up"},
  };
  try {
    for (const auto& step : steps) {
      if (!runCommand(step)) {
        std::string line;
        for (const auto& a : step) line += a + " ";
        throw std::runtime_error("setup failed: " + line);
      }
    }
    readInterface(receiverNs_, receiverIf_, receiverIfindex_, receiverMac_);
    readInterface(senderNs_, senderIf_, senderIfindex_, senderMac_);
  } catch (...) {
    removeAll();
    throw;
  }
}

Testbed::~Testbed() { removeAll(); }

void Testbed::removeAll() noexcept {
  // Deleting a namespace deletes its veth end, and with it the other end.
  for (const auto* ns : {&senderNs_, &receiverNs_}) {
    if (access(("/run/netns/" + *ns).c_str(), F_OK) == 0) runCommand({"ip", "netns", "del", *ns});
  }
}

}  // namespace outer_io
