// ipsec-forwarder: its counters, one per event and one per drop reason (in the
// spirit of FreeBSD's espstat), declared once (lib/stats/counters.h). Plain
// integers: only the data-path thread writes them, and stats are read on the
// same thread. The levels (sas, policies) are set when stats are taken.
#pragma once

#include "stats/counters.h"

namespace ipsec::forwarder {

#define IPSEC_FORWARDER_COUNTERS(EVENT, LEVEL) \
  EVENT(esp_out_packets, "ESP packets sent") \
  EVENT(esp_out_bytes, "bytes of ESP payload sent") \
  EVENT(esp_in_packets, "ESP packets decrypted and delivered") \
  EVENT(esp_in_bytes, "bytes of inner packets delivered") \
  EVENT(tun_in_packets, "packets read from the TUN") \
  EVENT(out_drop_bad_inner, "TUN packet not a valid IPv4/IPv6 packet") \
  EVENT(out_drop_no_policy, "no outbound policy matched") \
  EVENT(out_drop_policy_discard, "the matching policy says discard") \
  EVENT(out_drop_policy_bypass, "policy none: a TUN has no clear path out") \
  EVENT(out_drop_no_sa, "no SA came in time (or the hold queue was full)") \
  EVENT(out_held_no_sa, "held while an ACQUIRE asks for an SA") \
  EVENT(out_acquires, "ACQUIREs sent to ipsec-policy") \
  EVENT(out_acquire_pending, "held packet re-run: its ACQUIRE still pending") \
  EVENT(out_acquire_table_full, "ACQUIRE not sent: too many distinct requests") \
  EVENT(out_drop_seq_wait, "sequence numbers exhausted, grant pending") \
  EVENT(out_drop_no_room, "packet too large for the buffer's tailroom") \
  EVENT(out_stall_no_buffer, "pool empty: TUN reading paused, nothing lost") \
  EVENT(out_drop_ring_full, "crypto request ring full") \
  EVENT(out_drop_crypto, "the broker failed to seal") \
  EVENT(out_drop_wrong_direction, "the broker refused: seal/sign on an SA not outbound") \
  EVENT(out_drop_send, "sendmmsg refused the packet") \
  EVENT(esp_out_drop_disabled, "net.inet.esp.enable = 0") \
  EVENT(esp_in_drop_disabled, "net.inet.esp.enable = 0") \
  EVENT(esp_in_drop_truncated, "shorter than header, IV, trailer and ICV") \
  EVENT(esp_in_drop_bad_ip, "outer IP header malformed") \
  EVENT(esp_in_drop_no_sa, "unknown SPI") \
  EVENT(esp_in_drop_replay, "duplicate or left of the replay window") \
  EVENT(esp_in_drop_bad_icv, "integrity check failed") \
  EVENT(esp_in_drop_bad_length, "ciphertext not a multiple of the block size") \
  EVENT(esp_in_drop_bad_padding, "padding bytes or pad length wrong") \
  EVENT(esp_in_drop_bad_next_header, "next header not IPv4/IPv6 in tunnel mode") \
  EVENT(esp_in_drop_inner_mismatch, "next header disagrees with inner version") \
  EVENT(esp_in_drop_bad_inner, "inner packet malformed") \
  EVENT(esp_in_drop_policy, "inner packet not allowed by the inbound SPD") \
  EVENT(esp_in_stall_no_buffer, "pool empty: socket reading paused, nothing lost") \
  EVENT(esp_in_drop_ring_full, "crypto request ring full") \
  EVENT(esp_in_drop_crypto, "the broker failed for another reason") \
  EVENT(esp_in_drop_wrong_direction, "the broker refused: open on an outbound SA") \
  EVENT(esp_in_dummy, "TFC dummy packets (next header 59) discarded") \
  EVENT(esp_in_drop_ecn, "outer CE on a Not-ECT inner packet (RFC 6040)") \
  EVENT(esp_in_drop_encap_mismatch, "ESP-in-UDP for a plain SA, or plain ESP for a NAT-T SA") \
  EVENT(esp_ring_in_packets, "plain ESP/IPv4 packets taken from the packet ring (esp_ring)") \
  EVENT(esp_ring_drop_bad_frame, "a ring frame whose header does not fit the frame") \
  EVENT(esp_ring_drop_truncated, "longer than a ring frame holds") \
  EVENT(esp_ring_drop_fragment, "an outer IPv4 fragment on the ring (not reassembled there)") \
  EVENT(natt_in_esp_packets, "ESP packets received in UDP (before decryption)") \
  EVENT(natt_in_keepalives, "NAT keepalives received (RFC 3948 §2.3), dropped") \
  EVENT(natt_in_ike_no_listener, "non-ESP marker but no IKE daemon on the port") \
  EVENT(natt_in_drop_bad, "UDP payload neither ESP, IKE nor a keepalive") \
  EVENT(natt_in_new_mapping, "a NAT-T SA's peer address/port changed: reported") \
  EVENT(natt_out_esp_packets, "ESP packets sent in UDP") \
  EVENT(natt_out_keepalives, "NAT keepalives sent") \
  EVENT(natt_out_keepalive_errors, "the socket refused a keepalive") \
  EVENT(tun_write_errors, "the TUN refused a decrypted packet") \
  EVENT(crypto_bad_completion, "a completion named no in-flight buffer, or bytes outside its buffer") \
  EVENT(transport_out_packets, "transport-mode packets framed for sealing") \
  EVENT(transport_in_packets, "transport-mode packets delivered to the TUN") \
  EVENT(transport_out_drop_fragment, "a local fragment: ESP transport wants whole datagrams") \
  EVENT(transport_in_drop_natt, "transport mode in UDP: TCP/UDP header cut (NAT-OA)") \
  EVENT(transport_out_natt, "transport-mode packets sent as ESP in UDP (NAT-T)") \
  EVENT(transport_out_drop_natt, "transport-mode packets not sent in UDP: NAT-T SA without ports, or no room for IPv4+UDP") \
  EVENT(out_drop_sa_mode, "the SA's mode is not the policy request's") \
  EVENT(ipcomp_out_compressed, "inner packets compressed (RFC 3173)") \
  EVENT(ipcomp_out_uncompressed, "below the threshold or incompressible: sent as is") \
  EVENT(ipcomp_out_drop_disabled, "net.inet.ipcomp.enable = 0") \
  EVENT(ipcomp_out_drop_no_sa, "the policy requires IPComp and there is no SA") \
  EVENT(ipcomp_out_drop_error, "the compressor failed") \
  EVENT(ipcomp_in_decompressed, "IPComp payloads inflated") \
  EVENT(ipcomp_in_drop_disabled, "net.inet.ipcomp.enable = 0") \
  EVENT(ipcomp_in_drop_truncated, "shorter than the IPComp header") \
  EVENT(ipcomp_in_drop_no_sa, "CPI of no IPComp SA between the ESP SA's ends") \
  EVENT(ipcomp_in_drop_bad_data, "not a valid raw DEFLATE stream") \
  EVENT(ipcomp_in_drop_too_large, "would inflate beyond the limit (a bomb)") \
  EVENT(ipcomp_in_drop_bad_next_header, "not IPv4/IPv6 inside, or the version disagrees") \
  EVENT(ipcomp_in_drop_error, "the decompressor failed otherwise") \
  EVENT(ah_out_packets, "AH packets sent (RFC 4302)") \
  EVENT(ah_out_bytes, "bytes of AH packets sent, IP header included") \
  EVENT(ah_out_drop_disabled, "net.inet.ah.enable = 0") \
  EVENT(ah_out_drop_bundle, "AH with ESP/IPComp in one policy: not run") \
  EVENT(ah_out_drop_too_big, "with AH the packet exceeds the IP length field") \
  EVENT(ah_out_drop_bad_header, "the host's headers could not be canonicalised") \
  EVENT(ah_in_packets, "AH packets verified and delivered") \
  EVENT(ah_in_bytes, "bytes of packets delivered from AH") \
  EVENT(ah_in_drop_disabled, "net.inet.ah.enable = 0") \
  EVENT(ah_in_drop_truncated, "lib/ah kTruncated (or a cut datagram)") \
  EVENT(ah_in_drop_bad_length, "AH length not the SA's ICV length (RFC 4302 §2.2)") \
  EVENT(ah_in_drop_reserved_spi, "SPI 0") \
  EVENT(ah_in_drop_bad_ip_header, "IP header malformed or not rebuildable") \
  EVENT(ah_in_drop_bad_ipv4_options, "an IPv4 option's length is wrong") \
  EVENT(ah_in_drop_bad_extension_header, "an IPv6 option TLV runs past its header") \
  EVENT(ah_in_drop_too_many_ext_headers, "too many IPv6 extension headers before AH") \
  EVENT(ah_in_drop_bad_routing_header, "routing header length does not fit") \
  EVENT(ah_in_drop_unsupported_routing, "routing type not 0/2 with segments left") \
  EVENT(ah_in_drop_fragment, "a fragment: AH covers whole packets") \
  EVENT(ah_in_drop_no_ah, "no AH header where expected") \
  EVENT(ah_in_drop_headers_too_long, "headers before AH beyond what we save") \
  EVENT(ah_in_drop_no_headroom, "lib/ah kNoHeadroom (not expected inbound)") \
  EVENT(ah_in_drop_bad_icv_length, "lib/ah kBadIcvLength (not expected inbound)") \
  EVENT(ah_in_drop_no_sa, "unknown SPI for AH") \
  EVENT(ah_in_drop_replay, "duplicate or left of the replay window") \
  EVENT(ah_in_drop_bad_icv, "integrity check failed") \
  EVENT(ah_in_drop_crypto, "the broker failed for another reason") \
  EVENT(ah_in_drop_wrong_direction, "the broker refused: verify on an outbound SA") \
  EVENT(ah_in_drop_bad_next_header, "tunnel SA without an IP packet inside") \
  EVENT(ah_in_drop_bad_inner, "inner packet malformed") \
  EVENT(ah_in_drop_ecn, "outer CE on a Not-ECT inner packet (RFC 6040)") \
  EVENT(ah_in_drop_policy, "not allowed by the inbound SPD") \
  EVENT(bundle_out_packets, "ESP sealed, then AH signed or tunnel ESP sealed (bundle.cpp)") \
  EVENT(bundle_out_drop_sa_gone, "the second SA went away between the stages") \
  EVENT(bundle_out_drop_seq_wait, "the second SA's sequence grant ran out") \
  EVENT(bundle_out_without_optional, "a `use` leg had no SA: ACQUIRE, sent with the other alone") \
  EVENT(bundle_in_packets, "AH or tunnel ESP, then ESP opened and delivered") \
  EVENT(bundle_in_drop_missing_ah, "policy asks ESP inside AH: came without AH") \
  EVENT(bundle_in_drop_missing_esp, "policy asks ESP inside AH: AH without ESP") \
  EVENT(bundle_in_drop_ah_policy, "the AH SA used does not match the policy") \
  EVENT(bundle_in_drop_bad_inner, "ESP after AH could not be located") \
  EVENT(bundle_in_drop_ipcomp_policy, "compressed, and the policy has no IPComp") \
  EVENT(bundle_in_drop_missing_tunnel, "policy asks ESP inside an ESP tunnel: came without the tunnel") \
  EVENT(bundle_in_drop_missing_transport, "policy asks ESP inside an ESP tunnel: the tunnel's inner packet was not ESP for us") \
  EVENT(bundle_in_drop_tunnel_policy, "the tunnel SA around transport ESP does not match the policy") \
  EVENT(bundle_in_without_optional, "came without a leg the policy asks for at level use: accepted") \
  /* tunnel details (pmtu.cpp): path MTU, outer fragments, TFC, dummy packets */ \
  EVENT(pmtu_out_drop_too_big, "beyond the SA MTU, DF (or IPv6 > 1280): ICMP instead") \
  EVENT(pmtu_icmp_sent, "ICMP frag needed / ICMPv6 too big sent to the TUN") \
  EVENT(pmtu_icmp_rate_limited, "ICMP too-big messages not sent: over kIcmpPerSecond") \
  EVENT(pmtu_icmp_not_due, "ICMP too-big messages not sent: about an ICMP error, multicast, ...") \
  EVENT(pmtu_out_fragmented, "outer packets sent in fragments") \
  EVENT(pmtu_out_fragments, "fragments sent") \
  EVENT(pmtu_out_drop_fragment, "could not be fragmented (too many pieces)") \
  EVENT(pmtu_out_drop_header, "no room for the outer header (not expected)") \
  EVENT(esp_out_tfc_padded, "inner packets padded for TFC (RFC 4303 §2.7)") \
  EVENT(esp_in_tfc_stripped, "inbound TFC padding cut at the inner IP length") \
  EVENT(esp_out_dummy, "dummy packets (next header 59) sealed") \
  EVENT(esp_out_dummy_drop, "dummy due but no buffer or sequence number") \
  /* NAT-OA (nat_oa.cpp): transport mode in UDP, the TCP/UDP checksum fix-up */ \
  EVENT(natt_in_oa_adjusted, "transport-mode TCP/UDP checksums updated from the SA's original addresses (NAT-OA)") \
  EVENT(natt_in_oa_zeroed, "transport-mode UDP/IPv4 checksums set to 0: no original address") \
  EVENT(natt_in_oa_recomputed, "transport-mode TCP or UDP/IPv6 checksums recomputed: no original address") \
  EVENT(natt_in_oa_not_needed, "transport-mode packets needing no checksum fix-up: not TCP/UDP, or a UDP checksum of 0") \
  /* UDP GRO/GSO on the NAT-T sockets (gro.cpp): net.inet.ipsec.udp_gro, udp_gso */ \
  EVENT(natt_in_gro_datagrams, "coalesced datagrams received (UDP_GRO)") \
  EVENT(natt_in_gro_segments, "datagrams split out of coalesced ones (UDP_GRO)") \
  EVENT(natt_in_gro_drop_bad, "GRO size 0, above the datagram, too many segments, cut control") \
  EVENT(natt_in_gro_drop_no_buffer, "segments lost: no free buffer to split into") \
  EVENT(natt_in_gro_parked, "datagrams that waited for free buffers (then handled)") \
  /* A GRO datagram opened as one multi-segment request (gro_open.h), or split as before and why */ \
  EVENT(esp_in_multi_segment_requests, "coalesced ESP-in-UDP datagrams opened in place as one request") \
  EVENT(esp_in_multi_segment_segments, "ESP packets in those requests") \
  EVENT(esp_in_multi_segment_copied, "of them, judged on a copy after opening (IPComp, upper-layer payload, inner ESP)") \
  EVENT(esp_in_multi_drop_no_buffer, "of those, dropped: no free buffer to copy into") \
  EVENT(esp_in_multi_split_mixed, "coalesced datagrams split: not all ESP under one SPI") \
  EVENT(esp_in_multi_split_precheck, "coalesced datagrams split: a segment failed the pre-check (replay, length)") \
  EVENT(esp_in_multi_split_sa, "coalesced datagrams split: a transport SA, or ESN high halves that differ") \
  EVENT(esp_in_multi_split_too_many, "coalesced datagrams split: more segments than one request carries") \
  EVENT(natt_out_gso_datagrams, "UDP_SEGMENT sends of several ESP packets") \
  EVENT(natt_out_gso_segments, "ESP packets in UDP_SEGMENT sends") \
  EVENT(natt_out_gso_fallback, "a GSO send refused: its packets sent one by one") \
  EVENT(natt_out_df_switches, "IPv4 NAT-T socket's DF setting switched (IP_MTU_DISCOVER) for the next run of ESP") \
  EVENT(natt_out_drop_df_refused, "IPv4 ESP in UDP dropped: the socket refused the SA's DF setting") \
  /* SAs pinned to crypto workers (worker_pin.cpp) */ \
  EVENT(worker_pinned_copies, "packets copied into their SA's crypto worker's pool") \
  EVENT(worker_pin_no_buffer, "left on the burst's worker: its SA's had no free buffer") \
  /* TUN super-packets (tun_reader.cpp, tun_writer.cpp; tun_offload, issue 13) */ \
  EVENT(tun_in_super_packets, "GSO super-packets read from the TUN") \
  EVENT(tun_in_segments, "packets cut from them (each also in tun_in_packets)") \
  EVENT(tun_in_checksum_completed, "TUN packets without GSO whose checksum we completed (NEEDS_CSUM)") \
  EVENT(tun_in_drop_no_buffer, "segments of a super-packet not placed: its worker's pool ran out") \
  EVENT(tun_in_drop_short, "TUN read shorter than its virtio_net_hdr") \
  EVENT(tun_in_drop_unknown_flags, "virtio_net_hdr: a flag other than NEEDS_CSUM and DATA_VALID") \
  EVENT(tun_in_drop_unknown_gso_type, "virtio_net_hdr: UFO or an unknown GSO type") \
  EVENT(tun_in_drop_ecn_without_tcp, "virtio_net_hdr: the ECN bit without TCP GSO") \
  EVENT(tun_in_drop_gso_without_needs_checksum, "virtio_net_hdr: GSO with a complete checksum") \
  EVENT(tun_in_drop_zero_gso_size, "virtio_net_hdr: GSO with gso_size 0") \
  EVENT(tun_in_drop_checksum_outside_packet, "virtio_net_hdr: the checksum field lies beyond the packet") \
  EVENT(tun_in_drop_bad_packet, "virtio_net_hdr: GSO on a packet that is not IPv4/IPv6 + TCP/UDP") \
  EVENT(tun_in_drop_gso_protocol_mismatch, "virtio_net_hdr: the GSO type is not the packet's protocol") \
  EVENT(tun_in_drop_checksum_not_at_transport, "virtio_net_hdr: GSO with the checksum elsewhere than TCP/UDP's") \
  EVENT(tun_in_drop_too_many_segments, "virtio_net_hdr: more segments than kMaxSegments") \
  EVENT(tun_out_super_packets, "coalesced super-packets written to the TUN") \
  EVENT(tun_out_coalesced, "packets merged into them") \
  EVENT(tun_out_coalesce_refused, "super-packets the TUN refused: their packets written alone") \
  EVENT(tun_write_deferred_errors, "queued packets the TUN refused at the burst's end (counted delivered when queued)") \
  /* super-packets end to end as one request (super_packet.cpp) */ \
  EVENT(out_multi_segment_requests, "seal requests carrying several segments of one TUN super-packet") \
  EVENT(out_multi_segment_segments, "ESP packets framed in them (each also in tun_in_segments)") \
  /* esp_send = packet: plain tunnel ESP/IPv4 to the next hop's MAC (next_hop.h) */ \
  EVENT(out_packet_socket, "ESP/IPv4 packets the packet socket took (each also in esp_out_packets)") \
  EVENT(out_packet_socket_too_big, "refused by the packet socket as too big (EMSGSIZE): sent on the raw socket") \
  EVENT(next_hop_misses, "ESP/IPv4 sends (a packet, or a super-packet's segments) on the raw socket: no next hop known yet") \
  EVENT(next_hop_lookups, "route lookups asked of the kernel for a destination") \
  EVENT(next_hop_flushes, "next-hop cache emptied: a route changed or netlink notifications were lost") \
  EVENT(netlink_bad_message, "netlink messages refused by the parser (lib/netlink)") \
  LEVEL(sas, "SAs installed in the forwarder") \
  LEVEL(policies, "policies installed in the forwarder") \
  LEVEL(sas_not_listed, "SAs whose own counters the stats answer leaves out: it lists the first kMaxListedSas (one control message holds no more)")

IPSEC_STATS_STRUCT(Counters, IPSEC_FORWARDER_COUNTERS);

// Per SA: what `ipsecctl stats` shows under each SA.
#define IPSEC_FORWARDER_SA_COUNTERS(EVENT, LEVEL) \
  EVENT(out_packets, "packets sent under this SA") \
  EVENT(out_bytes, "bytes sent under this SA") \
  EVENT(in_packets, "packets received under this SA and delivered") \
  EVENT(in_bytes, "bytes delivered from this SA") \
  EVENT(in_drop_replay, "packets dropped: duplicate or left of the replay window") \
  EVENT(in_drop_bad_icv, "packets dropped: integrity check failed") \
  EVENT(in_drop_other, "packets dropped for any other reason")

IPSEC_STATS_STRUCT(SaCounters, IPSEC_FORWARDER_SA_COUNTERS);

}  // namespace ipsec::forwarder
