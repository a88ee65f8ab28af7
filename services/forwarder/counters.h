// ipsec-forwarder: its counters, one per event and one per drop reason (in the
// spirit of FreeBSD's espstat). Plain integers: only the data-path thread
// writes them, and stats are read on the same thread.
#pragma once

#include <cstdint>

namespace ipsec::forwarder {

#define IPSEC_FORWARDER_COUNTERS(X)                                                \
  X(esp_out_packets)          /* ESP packets sent */                               \
  X(esp_out_bytes)            /* bytes of ESP payload sent */                      \
  X(esp_in_packets)           /* ESP packets decrypted and delivered */            \
  X(esp_in_bytes)             /* bytes of inner packets delivered */               \
  X(tun_in_packets)           /* packets read from the TUN */                      \
  X(out_drop_bad_inner)       /* TUN packet not a valid IPv4/IPv6 packet */        \
  X(out_drop_no_policy)       /* no outbound policy matched */                     \
  X(out_drop_policy_discard)  /* the matching policy says discard */               \
  X(out_drop_policy_bypass)   /* policy none: a TUN has no clear path out */       \
  X(out_drop_no_sa)           /* no SA came in time (or the hold queue was full) */ \
  X(out_held_no_sa)           /* held while an ACQUIRE asks for an SA */           \
  X(out_acquires)             /* ACQUIREs sent to ipsec-policy */                  \
  X(out_acquire_pending)      /* held packet re-run: its ACQUIRE still pending */  \
  X(out_acquire_table_full)   /* ACQUIRE not sent: too many distinct requests */   \
  X(out_drop_seq_wait)        /* sequence numbers exhausted, grant pending */      \
  X(out_drop_no_room)         /* packet too large for the buffer's tailroom */     \
  X(out_stall_no_buffer)      /* pool empty: TUN reading paused, nothing lost */  \
  X(out_drop_ring_full)       /* crypto request ring full */                       \
  X(out_drop_crypto)          /* the broker failed to seal */                      \
  X(out_drop_wrong_direction) /* the broker refused: seal/sign on an SA not outbound */ \
  X(out_drop_send)            /* sendmmsg refused the packet */                    \
  X(esp_out_drop_disabled)    /* net.inet.esp.enable = 0 */                        \
  X(esp_in_drop_disabled)     /* net.inet.esp.enable = 0 */                        \
  X(esp_in_drop_truncated)    /* shorter than header, IV, trailer and ICV */       \
  X(esp_in_drop_bad_ip)       /* outer IP header malformed */                      \
  X(esp_in_drop_no_sa)        /* unknown SPI */                                    \
  X(esp_in_drop_replay)       /* duplicate or left of the replay window */         \
  X(esp_in_drop_bad_icv)      /* integrity check failed */                         \
  X(esp_in_drop_bad_length)   /* ciphertext not a multiple of the block size */    \
  X(esp_in_drop_bad_padding)  /* padding bytes or pad length wrong */              \
  X(esp_in_drop_bad_next_header) /* next header not IPv4/IPv6 in tunnel mode */    \
  X(esp_in_drop_inner_mismatch)  /* next header disagrees with inner version */    \
  X(esp_in_drop_bad_inner)    /* inner packet malformed */                         \
  X(esp_in_drop_policy)       /* inner packet not allowed by the inbound SPD */    \
  X(esp_in_stall_no_buffer)   /* pool empty: socket reading paused, nothing lost */ \
  X(esp_in_drop_ring_full)    /* crypto request ring full */                       \
  X(esp_in_drop_crypto)       /* the broker failed for another reason */           \
  X(esp_in_drop_wrong_direction) /* the broker refused: open on an outbound SA */   \
  X(esp_in_dummy)             /* TFC dummy packets (next header 59) discarded */   \
  X(esp_in_drop_ecn)          /* outer CE on a Not-ECT inner packet (RFC 6040) */  \
  X(esp_in_drop_encap_mismatch) /* ESP-in-UDP for a plain SA, or plain ESP for a NAT-T SA */ \
  X(natt_in_esp_packets)      /* ESP packets received in UDP (before decryption) */ \
  X(natt_in_keepalives)       /* NAT keepalives received (RFC 3948 §2.3), dropped */ \
  X(natt_in_ike_no_listener)  /* non-ESP marker but no IKE daemon on the port */  \
  X(natt_in_drop_bad)         /* UDP payload neither ESP, IKE nor a keepalive */   \
  X(natt_in_new_mapping)      /* a NAT-T SA's peer address/port changed: reported */ \
  X(natt_out_esp_packets)     /* ESP packets sent in UDP */                        \
  X(natt_out_keepalives)      /* NAT keepalives sent */                            \
  X(natt_out_keepalive_errors) /* the socket refused a keepalive */                \
  X(tun_write_errors)         /* the TUN refused a decrypted packet */             \
  X(crypto_bad_completion)    /* a completion named no in-flight buffer */         \
  X(transport_out_packets)    /* transport-mode packets framed for sealing */      \
  X(transport_in_packets)     /* transport-mode packets delivered to the TUN */    \
  X(transport_out_drop_fragment) /* a local fragment: ESP transport wants whole datagrams */ \
  X(transport_in_drop_natt)   /* transport mode in UDP: TCP/UDP header cut (NAT-OA) */ \
  X(transport_out_natt)       /* transport-mode packets sent as ESP in UDP (NAT-T) */ \
  X(transport_out_drop_natt)  /* ... not sent: NAT-T SA without ports, or no room for IPv4+UDP */ \
  X(out_drop_sa_mode)         /* the SA's mode is not the policy request's */     \
  X(ipcomp_out_compressed)    /* inner packets compressed (RFC 3173) */            \
  X(ipcomp_out_uncompressed)  /* below the threshold or incompressible: sent as is */ \
  X(ipcomp_out_drop_disabled) /* net.inet.ipcomp.enable = 0 */                     \
  X(ipcomp_out_drop_no_sa)    /* the policy requires IPComp and there is no SA */  \
  X(ipcomp_out_drop_error)    /* the compressor failed */                          \
  X(ipcomp_in_decompressed)   /* IPComp payloads inflated */                       \
  X(ipcomp_in_drop_disabled)  /* net.inet.ipcomp.enable = 0 */                     \
  X(ipcomp_in_drop_truncated) /* shorter than the IPComp header */                 \
  X(ipcomp_in_drop_no_sa)     /* CPI of no IPComp SA between the ESP SA's ends */  \
  X(ipcomp_in_drop_bad_data)  /* not a valid raw DEFLATE stream */                 \
  X(ipcomp_in_drop_too_large) /* would inflate beyond the limit (a bomb) */        \
  X(ipcomp_in_drop_bad_next_header) /* not IPv4/IPv6 inside, or the version disagrees */ \
  X(ipcomp_in_drop_error)     /* the decompressor failed otherwise */          \
  X(ah_out_packets)           /* AH packets sent (RFC 4302) */                     \
  X(ah_out_bytes)             /* bytes of AH packets sent, IP header included */  \
  X(ah_out_drop_disabled)     /* net.inet.ah.enable = 0 */                         \
  X(ah_out_drop_bundle)       /* AH with ESP/IPComp in one policy: not run */      \
  X(ah_out_drop_too_big)      /* with AH the packet exceeds the IP length field */ \
  X(ah_out_drop_bad_header)   /* the host's headers could not be canonicalised */  \
  X(ah_in_packets)            /* AH packets verified and delivered */             \
  X(ah_in_bytes)              /* bytes of packets delivered from AH */            \
  X(ah_in_drop_disabled)      /* net.inet.ah.enable = 0 */                         \
  X(ah_in_drop_truncated)     /* lib/ah kTruncated (or a cut datagram) */          \
  X(ah_in_drop_bad_length)    /* AH length not the SA's ICV length (RFC 4302 §2.2) */ \
  X(ah_in_drop_reserved_spi)  /* SPI 0 */                                          \
  X(ah_in_drop_bad_ip_header) /* IP header malformed or not rebuildable */         \
  X(ah_in_drop_bad_ipv4_options) /* an IPv4 option's length is wrong */            \
  X(ah_in_drop_bad_extension_header) /* an IPv6 option TLV runs past its header */ \
  X(ah_in_drop_too_many_ext_headers) /* too many IPv6 extension headers before AH */ \
  X(ah_in_drop_bad_routing_header) /* routing header length does not fit */        \
  X(ah_in_drop_unsupported_routing) /* routing type not 0/2 with segments left */   \
  X(ah_in_drop_fragment)      /* a fragment: AH covers whole packets */            \
  X(ah_in_drop_no_ah)         /* no AH header where expected */                    \
  X(ah_in_drop_headers_too_long) /* headers before AH beyond what we save */       \
  X(ah_in_drop_no_headroom)   /* lib/ah kNoHeadroom (not expected inbound) */      \
  X(ah_in_drop_bad_icv_length) /* lib/ah kBadIcvLength (not expected inbound) */   \
  X(ah_in_drop_no_sa)         /* unknown SPI for AH */                             \
  X(ah_in_drop_replay)        /* duplicate or left of the replay window */         \
  X(ah_in_drop_bad_icv)       /* integrity check failed */                         \
  X(ah_in_drop_crypto)        /* the broker failed for another reason */           \
  X(ah_in_drop_wrong_direction) /* the broker refused: verify on an outbound SA */  \
  X(ah_in_drop_bad_next_header) /* tunnel SA without an IP packet inside */        \
  X(ah_in_drop_bad_inner)     /* inner packet malformed */                         \
  X(ah_in_drop_ecn)           /* outer CE on a Not-ECT inner packet (RFC 6040) */  \
  X(ah_in_drop_policy)        /* not allowed by the inbound SPD */              \
  X(bundle_out_packets)       /* ESP sealed, then AH signed or tunnel ESP sealed (bundle.cpp) */ \
  X(bundle_out_drop_sa_gone)  /* the second SA went away between the stages */    \
  X(bundle_out_drop_seq_wait) /* the second SA's sequence grant ran out */        \
  X(bundle_out_without_optional) /* a `use` leg had no SA: ACQUIRE, sent with the other alone */ \
  X(bundle_in_packets)        /* AH or tunnel ESP, then ESP opened and delivered */ \
  X(bundle_in_drop_missing_ah)  /* policy asks ESP inside AH: came without AH */  \
  X(bundle_in_drop_missing_esp) /* policy asks ESP inside AH: AH without ESP */   \
  X(bundle_in_drop_ah_policy)   /* the AH SA used does not match the policy */    \
  X(bundle_in_drop_bad_inner)   /* ESP after AH could not be located */           \
  X(bundle_in_drop_ipcomp_policy) /* compressed, and the policy has no IPComp */ \
  X(bundle_in_drop_missing_tunnel) /* policy asks ESP inside an ESP tunnel: came without the tunnel */ \
  X(bundle_in_drop_missing_transport) /* ... the tunnel's inner packet was not ESP for us */ \
  X(bundle_in_drop_tunnel_policy) /* the tunnel SA around transport ESP does not match the policy */ \
  X(bundle_in_without_optional) /* came without a leg the policy asks for at level use: accepted */ \
  /* tunnel details (pmtu.cpp): path MTU, outer fragments, TFC, dummy packets */   \
  X(pmtu_out_drop_too_big)    /* beyond the SA MTU, DF (or IPv6 > 1280): ICMP instead */ \
  X(pmtu_icmp_sent)           /* ICMP frag needed / ICMPv6 too big to the TUN */   \
  X(pmtu_icmp_rate_limited)   /* ... not sent: over kIcmpPerSecond */              \
  X(pmtu_icmp_not_due)        /* ... not sent: about an ICMP error, multicast, ... */ \
  X(pmtu_out_fragmented)      /* outer packets sent in fragments */                \
  X(pmtu_out_fragments)       /* fragments sent */                                 \
  X(pmtu_out_drop_fragment)   /* could not be fragmented (too many pieces) */      \
  X(pmtu_out_drop_header)     /* no room for the outer header (not expected) */    \
  X(esp_out_tfc_padded)       /* inner packets padded for TFC (RFC 4303 §2.7) */   \
  X(esp_in_tfc_stripped)      /* inbound TFC padding cut at the inner IP length */ \
  X(esp_out_dummy)            /* dummy packets (next header 59) sealed */          \
  X(esp_out_dummy_drop)       /* dummy due but no buffer or sequence number */   \
  /* NAT-OA (nat_oa.cpp): transport mode in UDP, the TCP/UDP checksum fix-up */    \
  X(natt_in_oa_adjusted)      /* updated from the SA's original addresses */       \
  X(natt_in_oa_zeroed)        /* UDP/IPv4, no original address: checksum 0 */      \
  X(natt_in_oa_recomputed)    /* TCP or UDP/IPv6, no original address */           \
  X(natt_in_oa_not_needed)    /* not TCP/UDP, or a UDP checksum of 0 */          \
  /* UDP GRO/GSO on the NAT-T sockets (gro.cpp): net.inet.ipsec.udp_gro, udp_gso */ \
  X(natt_in_gro_datagrams)    /* coalesced datagrams received (UDP_GRO) */          \
  X(natt_in_gro_segments)     /* ... the datagrams split out of them */             \
  X(natt_in_gro_drop_bad)     /* GRO size 0, above the datagram, too many segments, cut control */ \
  X(natt_in_gro_drop_no_buffer) /* segments lost: no free buffer to split into */   \
  X(natt_in_gro_parked)       /* datagrams that waited for free buffers (then handled) */ \
  X(natt_out_gso_datagrams)   /* UDP_SEGMENT sends of several ESP packets (IPv6) */ \
  X(natt_out_gso_segments)    /* ... the ESP packets in them */                     \
  X(natt_out_gso_fallback)    /* a GSO send refused: its packets sent one by one */ \
  X(worker_pinned_copies)     /* packets copied into their SA's crypto worker's pool */ \
  X(worker_pin_no_buffer)     /* left on the burst's worker: its SA's had no buffer */

struct Counters {
#define IPSEC_DECLARE(name) std::uint64_t name = 0;
  IPSEC_FORWARDER_COUNTERS(IPSEC_DECLARE)
#undef IPSEC_DECLARE

  template <class F>
  void forEach(F&& f) const {
#define IPSEC_VISIT(name) f(#name, name);
    IPSEC_FORWARDER_COUNTERS(IPSEC_VISIT)
#undef IPSEC_VISIT
  }
};

// Per SA: what `ipsecctl stats` shows under each SA.
struct SaCounters {
  std::uint64_t out_packets = 0;
  std::uint64_t out_bytes = 0;
  std::uint64_t in_packets = 0;
  std::uint64_t in_bytes = 0;
  std::uint64_t in_drop_replay = 0;
  std::uint64_t in_drop_bad_icv = 0;
  std::uint64_t in_drop_other = 0;

  template <class F>
  void forEach(F&& f) const {
    f("out_packets", out_packets);
    f("out_bytes", out_bytes);
    f("in_packets", in_packets);
    f("in_bytes", in_bytes);
    f("in_drop_replay", in_drop_replay);
    f("in_drop_bad_icv", in_drop_bad_icv);
    f("in_drop_other", in_drop_other);
  }
};

}  // namespace ipsec::forwarder
