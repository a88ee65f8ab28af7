// See xdp_redirect.h.
#include "xdp_redirect.h"

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/if_link.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstddef>
#include <cstring>
#include <stdexcept>
#include <vector>

namespace outer_io {

namespace {

long bpf(int command, bpf_attr& attr) { return syscall(__NR_bpf, command, &attr, sizeof attr); }

// --- a few eBPF instructions, each built by name -----------------------------

bpf_insn instruction(std::uint8_t code, std::uint8_t dst, std::uint8_t src, std::int16_t offset, std::int32_t imm) {
  bpf_insn i{};
  i.code = code;
  i.dst_reg = dst & 0xf;
  i.src_reg = src & 0xf;
  i.off = offset;
  i.imm = imm;
  return i;
}

bpf_insn moveRegister(std::uint8_t dst, std::uint8_t src) { return instruction(BPF_ALU64 | BPF_MOV | BPF_X, dst, src, 0, 0); }
bpf_insn moveImmediate(std::uint8_t dst, std::int32_t imm) { return instruction(BPF_ALU64 | BPF_MOV | BPF_K, dst, 0, 0, imm); }
bpf_insn addImmediate(std::uint8_t dst, std::int32_t imm) { return instruction(BPF_ALU64 | BPF_ADD | BPF_K, dst, 0, 0, imm); }
bpf_insn andImmediate(std::uint8_t dst, std::int32_t imm) { return instruction(BPF_ALU64 | BPF_AND | BPF_K, dst, 0, 0, imm); }
// dst = *(size *)(src + offset)
bpf_insn load(std::uint8_t size, std::uint8_t dst, std::uint8_t src, std::int16_t offset) {
  return instruction(BPF_LDX | size | BPF_MEM, dst, src, offset, 0);
}
bpf_insn call(std::int32_t helper) { return instruction(BPF_JMP | BPF_CALL, 0, 0, 0, helper); }
bpf_insn exitProgram() { return instruction(BPF_JMP | BPF_EXIT, 0, 0, 0, 0); }

// The program under construction, with its jumps to one label ("pass")
// patched once the label's place is known: no offsets counted by hand.
class Assembler {
 public:
  void emit(const bpf_insn& i) { code_.push_back(i); }
  // if (dst <op> src) goto pass, on 64-bit registers
  void passIfRegister(std::uint8_t op, std::uint8_t dst, std::uint8_t src) {
    toPass_.push_back(code_.size());
    emit(instruction(BPF_JMP | op | BPF_X, dst, src, 0, 0));
  }
  // if ((u32)dst <op> imm) goto pass: a 32-bit compare, so that an immediate
  // with its top bit set is not sign-extended against a zero-extended load
  void passIfImmediate32(std::uint8_t op, std::uint8_t dst, std::uint32_t imm) {
    toPass_.push_back(code_.size());
    emit(instruction(BPF_JMP32 | op | BPF_K, dst, 0, 0, static_cast<std::int32_t>(imm)));
  }
  // dst = the map whose fd is mapFd (a two-slot instruction the kernel rewrites)
  void loadMap(std::uint8_t dst, int mapFd) {
    emit(instruction(BPF_LD | BPF_DW | BPF_IMM, dst, BPF_PSEUDO_MAP_FD, 0, mapFd));
    emit(instruction(0, 0, 0, 0, 0));
  }
  void placePass() {
    for (std::size_t at : toPass_) code_[at].off = static_cast<std::int16_t>(code_.size() - at - 1);
  }
  const std::vector<bpf_insn>& code() const { return code_; }

 private:
  std::vector<bpf_insn> code_;
  std::vector<std::size_t> toPass_;
};

// The value a load of these bytes (in wire order) gives on this host.
template <typename T, std::size_t N>
std::uint32_t asLoaded(const std::array<std::uint8_t, N>& wire) {
  static_assert(sizeof(T) == N);
  T value{};
  std::memcpy(&value, wire.data(), N);
  return value;
}

constexpr std::int16_t kEtherType = 12;
constexpr std::int16_t kIpv4 = ETH_HLEN;
constexpr std::int16_t kIpv4FragmentField = kIpv4 + 6;  // flags and fragment offset
constexpr std::int16_t kIpv4Protocol = kIpv4 + 9;
constexpr std::int16_t kIpv4Destination = kIpv4 + 16;
constexpr std::int32_t kIpv4HeaderEnd = kIpv4 + 20;

// r1 = the xdp_md context; r2 = data, r3 = data_end.
std::vector<bpf_insn> espRedirectProgram(int mapFd, std::uint32_t localAddress) {
  Assembler a;
  a.emit(load(BPF_W, BPF_REG_2, BPF_REG_1, offsetof(xdp_md, data)));
  a.emit(load(BPF_W, BPF_REG_3, BPF_REG_1, offsetof(xdp_md, data_end)));
  a.emit(moveRegister(BPF_REG_4, BPF_REG_2));
  a.emit(addImmediate(BPF_REG_4, kIpv4HeaderEnd));
  a.passIfRegister(BPF_JGT, BPF_REG_4, BPF_REG_3);  // shorter than Ethernet + a minimal IPv4 header
  a.emit(load(BPF_H, BPF_REG_5, BPF_REG_2, kEtherType));
  a.passIfImmediate32(BPF_JNE, BPF_REG_5, asLoaded<std::uint16_t>(std::array<std::uint8_t, 2>{0x08, 0x00}));
  a.emit(load(BPF_B, BPF_REG_5, BPF_REG_2, kIpv4Protocol));
  a.passIfImmediate32(BPF_JNE, BPF_REG_5, 50);  // IPPROTO_ESP
  a.emit(load(BPF_H, BPF_REG_5, BPF_REG_2, kIpv4FragmentField));
  a.emit(andImmediate(BPF_REG_5, static_cast<std::int32_t>(asLoaded<std::uint16_t>(std::array<std::uint8_t, 2>{0x3f, 0xff}))));
  a.passIfImmediate32(BPF_JNE, BPF_REG_5, 0);  // MF or an offset: a fragment, for the stack to reassemble
  a.emit(load(BPF_W, BPF_REG_5, BPF_REG_2, kIpv4Destination));
  a.passIfImmediate32(BPF_JNE, BPF_REG_5, localAddress);
  a.loadMap(BPF_REG_1, mapFd);
  a.emit(moveImmediate(BPF_REG_2, 0));         // key: the socket at 0
  a.emit(moveImmediate(BPF_REG_3, XDP_PASS));  // if the key holds no socket
  a.emit(call(BPF_FUNC_redirect_map));
  a.emit(exitProgram());
  a.placePass();
  a.emit(moveImmediate(BPF_REG_0, XDP_PASS));
  a.emit(exitProgram());
  return a.code();
}

std::runtime_error failure(const char* what) { return std::runtime_error(std::string(what) + ": " + std::strerror(errno)); }

}  // namespace

XdpRedirect::XdpRedirect(int ifindex, std::uint32_t localAddress, int xskFd, XdpMode preferred) {
  try {
    bpf_attr attr{};
    attr.map_type = BPF_MAP_TYPE_XSKMAP;
    attr.key_size = sizeof(std::uint32_t);
    attr.value_size = sizeof(std::uint32_t);
    attr.max_entries = 1;
    map_ = static_cast<int>(bpf(BPF_MAP_CREATE, attr));
    if (map_ < 0) throw failure("BPF_MAP_CREATE (XSKMAP)");

    const std::uint32_t key = 0;
    const std::uint32_t socket = static_cast<std::uint32_t>(xskFd);
    attr = {};
    attr.map_fd = static_cast<std::uint32_t>(map_);
    attr.key = reinterpret_cast<std::uint64_t>(&key);
    attr.value = reinterpret_cast<std::uint64_t>(&socket);
    attr.flags = BPF_ANY;
    if (bpf(BPF_MAP_UPDATE_ELEM, attr) != 0) throw failure("BPF_MAP_UPDATE_ELEM (the XSK at key 0)");

    const auto code = espRedirectProgram(map_, localAddress);
    static char license[] = "GPL";  // bpf_redirect_map is not GPL-only; a license is still required
    std::vector<char> log(64 * 1024);
    attr = {};
    attr.prog_type = BPF_PROG_TYPE_XDP;
    attr.expected_attach_type = BPF_XDP;
    attr.insns = reinterpret_cast<std::uint64_t>(code.data());
    attr.insn_cnt = static_cast<std::uint32_t>(code.size());
    attr.license = reinterpret_cast<std::uint64_t>(license);
    attr.log_level = 1;
    attr.log_buf = reinterpret_cast<std::uint64_t>(log.data());
    attr.log_size = static_cast<std::uint32_t>(log.size());
    std::strncpy(attr.prog_name, "oio_esp_to_xsk", sizeof attr.prog_name - 1);
    program_ = static_cast<int>(bpf(BPF_PROG_LOAD, attr));
    if (program_ < 0) {
      const std::string reason = std::strerror(errno);
      throw std::runtime_error("BPF_PROG_LOAD (XDP): " + reason + "; verifier: " + std::string(log.data()));
    }

    for (XdpMode mode : {XdpMode::kDriver, XdpMode::kGeneric}) {
      if (mode == XdpMode::kDriver && preferred == XdpMode::kGeneric) continue;
      attr = {};
      attr.link_create.prog_fd = static_cast<std::uint32_t>(program_);
      attr.link_create.target_ifindex = static_cast<std::uint32_t>(ifindex);
      attr.link_create.attach_type = BPF_XDP;
      attr.link_create.flags = mode == XdpMode::kDriver ? XDP_FLAGS_DRV_MODE : XDP_FLAGS_SKB_MODE;
      link_ = static_cast<int>(bpf(BPF_LINK_CREATE, attr));
      if (link_ >= 0) {
        mode_ = mode;
        break;
      }
    }
    if (link_ < 0) throw failure("BPF_LINK_CREATE (XDP, driver then generic mode)");
  } catch (...) {
    closeAll();
    throw;
  }
}

XdpRedirect::~XdpRedirect() { closeAll(); }

void XdpRedirect::closeAll() noexcept {
  for (int* fd : {&link_, &program_, &map_}) {  // the link first: that detaches the program
    if (*fd >= 0) close(*fd);
    *fd = -1;
  }
}

const char* xdpModeName(XdpMode mode) { return mode == XdpMode::kDriver ? "driver (native)" : "generic (SKB)"; }

}  // namespace outer_io
