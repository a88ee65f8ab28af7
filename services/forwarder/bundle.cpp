// ipsec-forwarder: IPComp (RFC 3173) in an SA bundle with ESP, tunnel mode.
//
// A policy such as `ipcomp/tunnel/A-B/use esp/transport//require` (KAME
// order: requests apply innermost first outbound) puts on the wire
//   outer IP | ESP (next header 108) | IPComp (next header 4/41) | inner packet
// with ESP between the tunnel's endpoints. Outbound the inner packet is
// compressed when it is above the threshold and shrinks (otherwise it goes
// uncompressed, RFC 3173 §2.2); inbound, after ESP, next header 108 is
// decompressed (bounded: a bomb stops at the limit) and the CPI must belong
// to an installed IPComp SA between the ESP SA's endpoints.
//
// IPComp SAs carry no key and have no crypto session: they live in a small
// table here, beside the ESP SA table. Data path functions are noexcept and
// allocation-free (the z_streams are allocated once, at start).
#include <linux/ipsec.h>
#include <linux/pfkeyv2.h>
#include <netinet/in.h>

#include "esp/esp.h"
#include "esp/transport.h"
#include "forwarder.h"
#include "ipcomp/ipcomp.h"
#include "log/log.h"

namespace ipsec::forwarder {

bool Forwarder::isIpcompInstall(proto::SaInstall::Reader msg) noexcept {
  return msg.getParams().getSatype() == SADB_X_SATYPE_IPCOMP;
}

bool Forwarder::installIpcomp(proto::SaInstall::Reader msg) {
  auto p = msg.getParams();
  auto src = addressFrom(p.getSrc());
  auto dst = addressFrom(p.getDst());
  if (!src || !dst || src->family() != dst->family() || p.getSpi() > 0xffff) return false;
  const SaRef ref{msg.getSa().getIndex(), msg.getSa().getGeneration()};
  removeIpcomp(ref);
  ipcompSas_.push_back({ref, static_cast<std::uint16_t>(p.getSpi()), p.getMode(), p.getReqid(), *src, *dst,
                        nextIpcompOrder_++});
  if (!compressor_) compressor_ = std::make_unique<ipcomp::Compressor>();
  if (!decompressor_) decompressor_ = std::make_unique<ipcomp::Decompressor>();
  log::info("IPComp SA installed: CPI {:#x} {} -> {}", p.getSpi(), src->toString(), dst->toString());
  return true;
}

bool Forwarder::removeIpcomp(SaRef ref) noexcept {
  return std::erase_if(ipcompSas_, [&](const IpcompSa& s) { return s.ref == ref; }) != 0;
}

const Forwarder::IpcompSa* Forwarder::selectIpcomp(const esp::IpAddress& src, const esp::IpAddress& dst,
                                                   std::uint32_t reqid) const noexcept {
  const IpcompSa* best = nullptr;
  for (const auto& s : ipcompSas_) {
    if (s.src != src || s.dst != dst || (reqid != 0 && s.reqid != reqid)) continue;
    if (!best || s.order > best->order) best = &s;
  }
  return best;
}

const Request* Forwarder::bundleTunnel(const Policy& p) noexcept {
  bool hasIpcomp = false;
  const Request* tunnel = nullptr;
  for (const auto& r : p.requests) {
    if (r.proto == IPPROTO_COMP) hasIpcomp = true;
    if (r.mode == IPSEC_MODE_TUNNEL && r.tunnelSrc && r.tunnelDst && !tunnel) tunnel = &r;
  }
  return hasIpcomp ? tunnel : nullptr;
}

// Outbound, before ESP: the inner packet at buf[off, off+len) may become an
// IPComp packet at buf[off-4, ...). False: drop (counted).
bool Forwarder::compressForBundle(const Policy& p, const Sa& esp, Worker& w, std::uint32_t buf, std::uint32_t& off,
                                  std::uint32_t& len, std::uint8_t& nextHeader) noexcept {
  const Request* req = nullptr;
  for (const auto& r : p.requests) {
    if (r.proto == IPPROTO_COMP) req = &r;
  }
  if (!req) return true;
  if (!ipcompEnabled_) {
    ++counters_.ipcomp_out_drop_disabled;
    return false;
  }
  const IpcompSa* sa = selectIpcomp(esp.src, esp.dst, req->level == IPSEC_LEVEL_UNIQUE ? req->reqid : 0);
  if (!sa || !compressor_) {
    if (req->level == IPSEC_LEVEL_USE) return true;  // optional: send it without IPComp
    ++counters_.ipcomp_out_drop_no_sa;
    return false;
  }
  auto r = compressor_->compress({bufferData(w, buf), w.bufferSize}, off, len, nextHeader, sa->cpi);
  if (r.sendUncompressed()) {
    ++counters_.ipcomp_out_uncompressed;
    return true;
  }
  if (!r.compressed()) {
    ++counters_.ipcomp_out_drop_error;
    return false;
  }
  ++counters_.ipcomp_out_compressed;
  off = static_cast<std::uint32_t>(r.offset);
  len = static_cast<std::uint32_t>(r.length);
  nextHeader = esp::kProtoIpcomp;
  return true;
}

// Inbound, after ESP opened a packet whose next header is 108: decompress in
// place and describe the inner packet in `d` (offsets from the ESP header).
// False: dropped and counted, the caller frees the buffer.
bool Forwarder::decompressForBundle(std::span<std::uint8_t> fromEsp, const Sa& esp, esp::DecapResult& d) noexcept {
  if (!ipcompEnabled_) {
    ++counters_.ipcomp_in_drop_disabled;
    return false;
  }
  ipcomp::Header h;
  if (!ipcomp::parseHeader(fromEsp.subspan(d.offset, d.length), h)) {
    ++counters_.ipcomp_in_drop_truncated;
    return false;
  }
  bool known = false;
  for (const auto& s : ipcompSas_) {
    if (s.cpi == h.cpi && s.src == esp.src && s.dst == esp.dst) known = true;
  }
  if (!known) {
    ++counters_.ipcomp_in_drop_no_sa;
    return false;
  }
  if (!decompressor_) {
    ++counters_.ipcomp_in_drop_error;
    return false;
  }
  auto r = decompressor_->decompressInPlace(fromEsp, d.offset, d.length);
  if (!r.ok()) {
    switch (r.error) {
      case ipcomp::IpcompError::kTooLarge: ++counters_.ipcomp_in_drop_too_large; break;
      case ipcomp::IpcompError::kBadData:
      case ipcomp::IpcompError::kTrailingData: ++counters_.ipcomp_in_drop_bad_data; break;
      case ipcomp::IpcompError::kTruncated: ++counters_.ipcomp_in_drop_truncated; break;
      default: ++counters_.ipcomp_in_drop_error; break;
    }
    return false;
  }
  const std::uint8_t version = r.length ? fromEsp[r.offset] >> 4 : 0;
  if ((r.header.nextHeader == esp::kNextHeaderIpv4 && version != 4) ||
      (r.header.nextHeader == esp::kNextHeaderIpv6 && version != 6) ||
      (r.header.nextHeader != esp::kNextHeaderIpv4 && r.header.nextHeader != esp::kNextHeaderIpv6)) {
    ++counters_.ipcomp_in_drop_bad_next_header;
    return false;
  }
  ++counters_.ipcomp_in_decompressed;
  d.offset = r.offset;
  d.length = r.length;
  d.nextHeader = r.header.nextHeader;
  d.error = esp::EspError::kOk;
  return true;
}

}  // namespace ipsec::forwarder
