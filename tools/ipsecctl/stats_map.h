// ipsecctl: how the forwarder's counters (services/forwarder/counters.h) are
// shown by `ipsecctl stats`, grouped as FreeBSD's `netstat -s -p esp|ah|ipcomp`
// (struct espstat/ahstat/ipcompstat/ipsecstat) plus a natt group of our own.
//
// This table is the one place that says, for every counter, its group, the
// FreeBSD field it adds to (empty when FreeBSD has none) and a phrase. Ours are
// finer than FreeBSD's: a field fed by several counters is printed as their sum
// with the counters indented under it. tests/unit/ipsecctl checks that every
// counter of counters.h appears here exactly once, so a new counter cannot be
// forgotten. Runs only in the admin tool; it trusts nothing but its own table
// (a counter it does not know is still printed, under "other").
#pragma once

#include <string_view>
#include <utility>

namespace ipsec::ipsecctl {

// Groups in the order they print; the name is the `-p` value and the title.
inline constexpr std::string_view kStatGroups[] = {"esp", "ah", "ipcomp", "ipsec", "natt"};

// A FreeBSD field, in the order netstat prints them. "%s" takes the plural "s".
struct StatField {
  std::string_view group;
  std::string_view field;
  std::string_view phrase;
};

inline constexpr StatField kStatFields[] = {
    // esp_var.h / netstat ipsec.c print_espstats
    {"esp", "esps_hdrops", "packet%s shorter than header shows"},
    {"esp", "esps_nopf", "packet%s dropped; protocol family not supported"},
    {"esp", "esps_notdb", "packet%s dropped; no TDB"},
    {"esp", "esps_qfull", "packet%s dropped; queue full"},
    {"esp", "esps_badilen", "packet%s dropped; bad ilen"},
    {"esp", "esps_wrap", "replay counter wrap%s"},
    {"esp", "esps_badenc", "packet%s dropped; bad encryption detected"},
    {"esp", "esps_badauth", "packet%s dropped; bad authentication detected"},
    {"esp", "esps_replay", "possible replay packet%s detected"},
    {"esp", "esps_input", "packet%s in"},
    {"esp", "esps_output", "packet%s out"},
    {"esp", "esps_invalid", "packet%s dropped; invalid TDB"},
    {"esp", "esps_ibytes", "byte%s in"},
    {"esp", "esps_obytes", "byte%s out"},
    {"esp", "esps_toobig", "packet%s dropped; larger than IP_MAXPACKET"},
    {"esp", "esps_pdrops", "packet%s blocked due to policy"},
    {"esp", "esps_crypto", "crypto processing failure%s"},
    {"esp", "esps_tunnel", "tunnel sanity check failure%s"},
    // ah_var.h / print_ahstats
    {"ah", "ahs_hdrops", "packet%s shorter than header shows"},
    {"ah", "ahs_nopf", "packet%s dropped; protocol family not supported"},
    {"ah", "ahs_notdb", "packet%s dropped; no TDB"},
    {"ah", "ahs_noxform", "packet%s dropped; no transform"},
    {"ah", "ahs_badauth", "packet%s dropped; bad authentication detected"},
    {"ah", "ahs_badauthl", "packet%s dropped; bad authentication length"},
    {"ah", "ahs_replay", "possible replay packet%s detected"},
    {"ah", "ahs_input", "packet%s in"},
    {"ah", "ahs_output", "packet%s out"},
    {"ah", "ahs_invalid", "packet%s dropped; invalid TDB"},
    {"ah", "ahs_ibytes", "byte%s in"},
    {"ah", "ahs_obytes", "byte%s out"},
    {"ah", "ahs_toobig", "packet%s dropped; larger than IP_MAXPACKET"},
    {"ah", "ahs_pdrops", "packet%s blocked due to policy"},
    {"ah", "ahs_crypto", "crypto processing failure%s"},
    {"ah", "ahs_tunnel", "tunnel sanity check failure%s"},
    // ipcomp_var.h / print_ipcompstats
    {"ipcomp", "ipcomps_hdrops", "packet%s shorter than header shows"},
    {"ipcomp", "ipcomps_nopf", "packet%s dropped; protocol family not supported"},
    {"ipcomp", "ipcomps_notdb", "packet%s dropped; no TDB"},
    {"ipcomp", "ipcomps_input", "packet%s in"},
    {"ipcomp", "ipcomps_output", "packet%s out"},
    {"ipcomp", "ipcomps_toobig", "packet%s dropped; larger than IP_MAXPACKET"},
    {"ipcomp", "ipcomps_pdrops", "packet%s blocked due to policy"},
    {"ipcomp", "ipcomps_crypto", "crypto processing failure%s"},
    {"ipcomp", "ipcomps_uncompr", "packet%s sent uncompressed; size < compr. algo. threshold or compression was useless"},
    // ipsec.h struct ipsecstat / print_ipsecstats
    {"ipsec", "ips_in_polvio", "inbound packet%s violated process security policy"},
    {"ipsec", "ips_in_inval", "invalid inbound packet%s"},
    {"ipsec", "ips_out_polvio", "outbound packet%s violated process security policy"},
    {"ipsec", "ips_out_nosa", "outbound packet%s with no SA available"},
    {"ipsec", "ips_out_inval", "invalid outbound packet%s"},
};

// Every counter of counters.h: its group, the FreeBSD field it adds to (empty:
// a line of its own) and its phrase.
struct StatCounter {
  std::string_view counter;
  std::string_view group;
  std::string_view field;
  std::string_view phrase;
};

inline constexpr StatCounter kStatCounters[] = {
    // esp
    {"esp_out_packets", "esp", "esps_output", "packet%s out"},
    {"esp_out_bytes", "esp", "esps_obytes", "byte%s of ESP payload out"},
    {"esp_in_packets", "esp", "esps_input", "packet%s decrypted and delivered"},
    {"esp_in_bytes", "esp", "esps_ibytes", "byte%s of inner packets delivered"},
    {"esp_in_drop_truncated", "esp", "esps_hdrops", "packet%s shorter than header, IV, trailer and ICV"},
    {"esp_in_drop_bad_ip", "esp", "esps_hdrops", "packet%s with a malformed outer IP header"},
    {"esp_in_drop_bad_next_header", "esp", "esps_nopf", "packet%s dropped; next header not IPv4/IPv6 in tunnel mode"},
    {"esp_in_drop_no_sa", "esp", "esps_notdb", "packet%s dropped; unknown SPI"},
    {"out_drop_ring_full", "esp", "esps_qfull", "outbound packet%s dropped; crypto request ring full"},
    {"esp_in_drop_ring_full", "esp", "esps_qfull", "inbound packet%s dropped; crypto request ring full"},
    {"esp_in_drop_bad_length", "esp", "esps_badilen", "packet%s dropped; ciphertext not a multiple of the block size"},
    {"out_drop_seq_wait", "esp", "esps_wrap", "packet%s dropped; sequence numbers exhausted, grant pending"},
    {"esp_in_drop_bad_padding", "esp", "esps_badenc", "packet%s dropped; padding bytes or pad length wrong"},
    {"esp_in_drop_bad_icv", "esp", "esps_badauth", "packet%s dropped; integrity check failed"},
    {"esp_in_drop_replay", "esp", "esps_replay", "packet%s dropped; duplicate or left of the replay window"},
    {"esp_in_drop_encap_mismatch", "esp", "esps_invalid",
     "packet%s dropped; ESP-in-UDP for a plain SA, or plain ESP for a NAT-T SA"},
    {"out_drop_no_room", "esp", "esps_toobig", "packet%s dropped; too large for the buffer's tailroom"},
    {"esp_out_drop_disabled", "esp", "esps_pdrops", "outbound packet%s dropped; net.inet.esp.enable = 0"},
    {"esp_in_drop_disabled", "esp", "esps_pdrops", "inbound packet%s dropped; net.inet.esp.enable = 0"},
    {"esp_in_drop_policy", "esp", "esps_pdrops", "inner packet%s not allowed by the inbound SPD"},
    {"out_drop_crypto", "esp", "esps_crypto", "seal failure%s in the broker"},
    {"esp_in_drop_crypto", "esp", "esps_crypto", "open failure%s in the broker (other than the ICV)"},
    {"out_drop_wrong_direction", "esp", "esps_crypto", "packet%s refused by the broker; seal or sign on an SA not outbound"},
    {"esp_in_drop_wrong_direction", "esp", "esps_crypto", "packet%s refused by the broker; open on an outbound SA"},
    {"esp_in_drop_inner_mismatch", "esp", "esps_tunnel", "packet%s dropped; next header disagrees with inner version"},
    {"esp_in_drop_bad_inner", "esp", "esps_tunnel", "packet%s dropped; inner packet malformed"},
    {"esp_in_drop_ecn", "esp", "esps_tunnel", "packet%s dropped; outer CE on a Not-ECT inner packet (RFC 6040)"},
    {"pmtu_out_drop_too_big", "esp", "esps_toobig", "packet%s beyond the SA's path MTU (ICMP sent instead)"},
    {"esp_out_tfc_padded", "esp", "", "inner packet%s padded for TFC (RFC 4303 §2.7)"},
    {"esp_in_tfc_stripped", "esp", "", "inbound TFC padding%s cut at the inner IP length"},
    {"esp_out_dummy", "esp", "", "dummy packet%s (next header 59) sealed"},
    {"esp_out_dummy_drop", "esp", "", "dummy packet%s due but no buffer or sequence number"},
    {"esp_in_dummy", "esp", "", "TFC dummy packet%s (next header 59) discarded"},
    {"esp_in_stall_no_buffer", "esp", "", "inbound read stall%s; buffer pool empty, nothing lost"},
    {"esp_ring_in_packets", "esp", "", "packet%s received through the packet ring (esp_ring)"},
    {"esp_ring_drop_bad_frame", "esp", "", "ring frame%s dropped; header does not fit the frame"},
    {"esp_ring_drop_truncated", "esp", "", "packet%s dropped; longer than a ring frame"},
    {"esp_ring_drop_fragment", "esp", "", "outer fragment%s dropped on the packet ring"},
    {"transport_out_packets", "esp", "", "transport-mode packet%s framed for sealing"},
    {"transport_in_packets", "esp", "", "transport-mode packet%s delivered"},
    {"transport_out_drop_fragment", "esp", "",
     "transport-mode packet%s dropped; a local fragment (ESP transport wants whole datagrams)"},
    {"transport_in_drop_natt", "esp", "", "transport-mode packet%s in UDP dropped; TCP/UDP header cut (NAT-OA)"},
    {"transport_out_natt", "esp", "", "transport-mode packet%s sent as ESP in UDP (NAT-T)"},
    {"transport_out_drop_natt", "esp", "", "transport-mode packet%s in UDP not sent; SA without ports or no room"},
    // ah
    {"ah_out_packets", "ah", "ahs_output", "packet%s out"},
    {"ah_out_bytes", "ah", "ahs_obytes", "byte%s out, IP header included"},
    {"ah_in_packets", "ah", "ahs_input", "packet%s verified and delivered"},
    {"ah_in_bytes", "ah", "ahs_ibytes", "byte%s of packets delivered"},
    {"ah_in_drop_truncated", "ah", "ahs_hdrops", "packet%s truncated"},
    {"ah_in_drop_bad_ip_header", "ah", "ahs_hdrops", "packet%s with an IP header malformed or not rebuildable"},
    {"ah_in_drop_bad_ipv4_options", "ah", "ahs_hdrops", "packet%s with a wrong IPv4 option length"},
    {"ah_in_drop_bad_extension_header", "ah", "ahs_hdrops", "packet%s with an IPv6 option TLV past its header"},
    {"ah_in_drop_too_many_ext_headers", "ah", "ahs_hdrops", "packet%s with too many IPv6 extension headers"},
    {"ah_in_drop_bad_routing_header", "ah", "ahs_hdrops", "packet%s with a routing header length that does not fit"},
    {"ah_in_drop_no_ah", "ah", "ahs_hdrops", "packet%s with no AH header where expected"},
    {"ah_in_drop_headers_too_long", "ah", "ahs_hdrops", "packet%s with headers before AH beyond what we save"},
    {"ah_in_drop_no_headroom", "ah", "ahs_hdrops", "packet%s without headroom"},
    {"ah_in_drop_unsupported_routing", "ah", "ahs_nopf", "packet%s with a routing type not 0/2 and segments left"},
    {"ah_in_drop_fragment", "ah", "ahs_nopf", "fragment%s (AH covers whole packets)"},
    {"ah_in_drop_no_sa", "ah", "ahs_notdb", "packet%s dropped; unknown SPI"},
    {"ah_out_drop_bundle", "ah", "ahs_noxform", "packet%s dropped; AH with ESP/IPComp in one policy"},
    {"ah_in_drop_bad_icv", "ah", "ahs_badauth", "packet%s dropped; integrity check failed"},
    {"ah_in_drop_bad_length", "ah", "ahs_badauthl", "packet%s whose AH length is not the SA's ICV length"},
    {"ah_in_drop_bad_icv_length", "ah", "ahs_badauthl", "packet%s with an ICV length lib/ah refused"},
    {"ah_in_drop_replay", "ah", "ahs_replay", "packet%s dropped; duplicate or left of the replay window"},
    {"ah_in_drop_reserved_spi", "ah", "ahs_invalid", "packet%s with SPI 0"},
    {"ah_out_drop_too_big", "ah", "ahs_toobig", "packet%s exceeding the IP length field with AH"},
    {"ah_out_drop_disabled", "ah", "ahs_pdrops", "outbound packet%s dropped; net.inet.ah.enable = 0"},
    {"ah_in_drop_disabled", "ah", "ahs_pdrops", "inbound packet%s dropped; net.inet.ah.enable = 0"},
    {"ah_in_drop_policy", "ah", "ahs_pdrops", "packet%s not allowed by the inbound SPD"},
    {"ah_in_drop_crypto", "ah", "ahs_crypto", "verify failure%s in the broker (other than the ICV)"},
    {"ah_in_drop_wrong_direction", "ah", "ahs_crypto", "packet%s refused by the broker; verify on an outbound SA"},
    {"ah_in_drop_bad_next_header", "ah", "ahs_tunnel", "packet%s on a tunnel SA without an IP packet inside"},
    {"ah_in_drop_bad_inner", "ah", "ahs_tunnel", "packet%s with a malformed inner packet"},
    {"ah_in_drop_ecn", "ah", "ahs_tunnel", "packet%s dropped; outer CE on a Not-ECT inner packet (RFC 6040)"},
    {"ah_out_drop_bad_header", "ah", "", "outbound packet%s whose headers could not be canonicalised"},
    // ipcomp
    {"ipcomp_in_drop_truncated", "ipcomp", "ipcomps_hdrops", "packet%s shorter than the IPComp header"},
    {"ipcomp_in_drop_bad_next_header", "ipcomp", "ipcomps_nopf",
     "packet%s not IPv4/IPv6 inside, or the version disagrees"},
    {"ipcomp_in_drop_no_sa", "ipcomp", "ipcomps_notdb", "inbound packet%s; CPI of no IPComp SA"},
    {"ipcomp_out_drop_no_sa", "ipcomp", "ipcomps_notdb", "outbound packet%s; the policy requires IPComp, no SA"},
    {"ipcomp_in_decompressed", "ipcomp", "ipcomps_input", "payload%s inflated"},
    {"ipcomp_out_compressed", "ipcomp", "ipcomps_output", "packet%s compressed"},
    {"ipcomp_in_drop_too_large", "ipcomp", "ipcomps_toobig", "payload%s that would inflate beyond the limit"},
    {"ipcomp_out_drop_disabled", "ipcomp", "ipcomps_pdrops", "outbound packet%s dropped; net.inet.ipcomp.enable = 0"},
    {"ipcomp_in_drop_disabled", "ipcomp", "ipcomps_pdrops", "inbound packet%s dropped; net.inet.ipcomp.enable = 0"},
    {"ipcomp_out_drop_error", "ipcomp", "ipcomps_crypto", "compressor failure%s"},
    {"ipcomp_in_drop_bad_data", "ipcomp", "ipcomps_crypto", "payload%s not a valid raw DEFLATE stream"},
    {"ipcomp_in_drop_error", "ipcomp", "ipcomps_crypto", "decompressor failure%s otherwise"},
    {"ipcomp_out_uncompressed", "ipcomp", "ipcomps_uncompr", "packet%s sent as is"},
    // ipsec: the SPD and the plumbing around the protocols
    {"out_drop_no_policy", "ipsec", "ips_out_polvio", "packet%s matching no outbound policy"},
    {"out_drop_policy_discard", "ipsec", "ips_out_polvio", "packet%s whose policy says discard"},
    {"out_drop_policy_bypass", "ipsec", "ips_out_polvio", "packet%s whose policy says none (a TUN has no clear path)"},
    {"out_drop_no_sa", "ipsec", "ips_out_nosa", "packet%s for which no SA came in time"},
    {"out_drop_bad_inner", "ipsec", "ips_out_inval", "TUN packet%s not a valid IPv4/IPv6 packet"},
    {"out_drop_sa_mode", "ipsec", "ips_out_inval", "packet%s whose SA mode is not the policy request's"},
    {"tun_in_packets", "ipsec", "", "packet%s read from the TUN"},
    {"out_held_no_sa", "ipsec", "", "packet%s held while an ACQUIRE asks for an SA"},
    {"out_acquires", "ipsec", "", "ACQUIRE%s sent to ipsec-policy"},
    {"out_acquire_pending", "ipsec", "", "held packet%s re-run with its ACQUIRE still pending (not asked again)"},
    {"out_acquire_table_full", "ipsec", "", "ACQUIRE%s not sent: too many distinct requests pending"},
    {"out_stall_no_buffer", "ipsec", "", "TUN read stall%s; buffer pool empty, nothing lost"},
    {"out_drop_send", "ipsec", "", "packet%s refused by sendmmsg"},
    {"tun_write_errors", "ipsec", "", "decrypted packet%s refused by the TUN"},
    {"crypto_bad_completion", "ipsec", "", "broker completion%s naming no in-flight buffer"},
    {"worker_pinned_copies", "ipsec", "", "packet%s copied into their SA's crypto worker's pool"},
    {"worker_pin_no_buffer", "ipsec", "", "packet%s left on the burst's worker (their SA's had no free buffer)"},
    // TUN super-packets (tun_offload, issue 13)
    {"tun_in_super_packets", "ipsec", "", "GSO super-packet%s read from the TUN"},
    {"tun_in_segments", "ipsec", "", "packet%s cut from TUN super-packets"},
    {"tun_in_checksum_completed", "ipsec", "", "TUN packet%s whose checksum we completed (NEEDS_CSUM)"},
    {"tun_in_drop_no_buffer", "ipsec", "", "super-packet segment%s not placed: the worker's pool ran out"},
    {"tun_in_drop_short", "ipsec", "", "TUN read%s shorter than the virtio_net_hdr"},
    {"tun_in_drop_unknown_flags", "ipsec", "", "TUN packet%s refused: unknown virtio_net_hdr flags"},
    {"tun_in_drop_unknown_gso_type", "ipsec", "", "TUN packet%s refused: UFO or an unknown GSO type"},
    {"tun_in_drop_ecn_without_tcp", "ipsec", "", "TUN packet%s refused: ECN bit without TCP GSO"},
    {"tun_in_drop_gso_without_needs_checksum", "ipsec", "", "TUN packet%s refused: GSO with a complete checksum"},
    {"tun_in_drop_zero_gso_size", "ipsec", "", "TUN packet%s refused: GSO with gso_size 0"},
    {"tun_in_drop_checksum_outside_packet", "ipsec", "", "TUN packet%s refused: checksum field beyond the packet"},
    {"tun_in_drop_bad_packet", "ipsec", "", "TUN packet%s refused: GSO on a packet not IPv4/IPv6 + TCP/UDP"},
    {"tun_in_drop_gso_protocol_mismatch", "ipsec", "", "TUN packet%s refused: GSO type not the packet's protocol"},
    {"tun_in_drop_checksum_not_at_transport", "ipsec", "", "TUN packet%s refused: GSO checksum not at TCP/UDP's"},
    {"tun_in_drop_too_many_segments", "ipsec", "", "TUN packet%s refused: too many segments"},
    {"tun_out_super_packets", "ipsec", "", "coalesced super-packet%s written to the TUN"},
    {"tun_out_coalesced", "ipsec", "", "packet%s merged into coalesced super-packets"},
    {"tun_out_coalesce_refused", "ipsec", "", "coalesced super-packet%s refused by the TUN (written packet by packet)"},
    {"tun_write_deferred_errors", "ipsec", "", "queued packet%s refused by the TUN at the burst's end"},
    {"out_multi_segment_requests", "ipsec", "", "seal request%s carrying several segments of one TUN super-packet"},
    {"out_multi_segment_segments", "ipsec", "", "ESP packet%s framed in them"},
    {"out_packet_socket", "esp", "", "packet%s sent on the packet socket to the next hop (esp_send = packet)"},
    {"out_packet_socket_too_big", "esp", "", "packet%s too big for the packet socket, sent on the raw socket"},
    {"next_hop_misses", "esp", "", "send%s (a packet or a super-packet's segments) on the raw socket: no next hop known yet"},
    {"next_hop_lookups", "esp", "", "next-hop route lookup%s asked of the kernel"},
    {"next_hop_flushes", "esp", "", "time%s the next-hop cache was emptied (a route change, lost notifications)"},
    {"netlink_bad_message", "esp", "", "netlink message%s refused"},
    // SA bundles (bundle.cpp)
    {"bundle_out_packets", "ipsec", "", "packet%s sealed by ESP, then signed by AH or sealed by an ESP tunnel"},
    {"bundle_out_drop_sa_gone", "ipsec", "ips_out_nosa", "bundle packet%s whose second SA went away"},
    {"bundle_out_drop_seq_wait", "ipsec", "", "bundle packet%s dropped; the second SA's sequence grant ran out"},
    {"bundle_out_without_optional", "ipsec", "", "bundle packet%s sent without a `use` leg that had no SA"},
    {"bundle_in_packets", "ipsec", "", "packet%s opened by AH or an ESP tunnel, then by ESP, and delivered"},
    {"bundle_in_drop_missing_ah", "ipsec", "ips_in_polvio", "packet%s without the AH the policy asks for"},
    {"bundle_in_drop_missing_esp", "ipsec", "ips_in_polvio", "AH packet%s without the ESP the policy asks for"},
    {"bundle_in_drop_ah_policy", "ipsec", "ips_in_polvio", "packet%s whose AH SA does not match the policy"},
    {"bundle_in_drop_ipcomp_policy", "ipsec", "ips_in_polvio", "compressed packet%s the policy has no IPComp for"},
    {"bundle_in_drop_missing_tunnel", "ipsec", "ips_in_polvio", "ESP packet%s without the ESP tunnel the policy asks for"},
    {"bundle_in_drop_missing_transport", "ipsec", "ips_in_polvio", "tunnel packet%s without the ESP inside the policy asks for"},
    {"bundle_in_drop_tunnel_policy", "ipsec", "ips_in_polvio", "packet%s whose ESP tunnel SA does not match the policy"},
    {"bundle_in_without_optional", "ipsec", "", "bundle packet%s accepted without a leg asked for at level use"},
    {"bundle_in_drop_bad_inner", "ipsec", "ips_in_inval", "packet%s whose ESP after AH could not be located"},
    // tunnel details (pmtu.cpp): path MTU, outer fragments
    {"pmtu_icmp_sent", "ipsec", "", "ICMP frag needed / ICMPv6 too big message%s sent to the TUN"},
    {"pmtu_icmp_rate_limited", "ipsec", "", "ICMP message%s not sent; rate limited"},
    {"pmtu_icmp_not_due", "ipsec", "", "ICMP message%s not sent; about an ICMP error, multicast, ..."},
    {"pmtu_out_fragmented", "ipsec", "", "outer packet%s sent in fragments"},
    {"pmtu_out_fragments", "ipsec", "", "fragment%s sent"},
    {"pmtu_out_drop_fragment", "ipsec", "ips_out_inval", "packet%s that could not be fragmented"},
    {"pmtu_out_drop_header", "ipsec", "ips_out_inval", "packet%s without room for the outer header"},
    // not in counters.h: the forwarder adds its table sizes to the list
    {"sas", "ipsec", "", "SAs installed"},
    {"policies", "ipsec", "", "policies installed"},
    {"sas_not_listed", "ipsec", "", "SA%s not listed one by one (the stats answer holds the first 2048)"},
    // natt (RFC 3948): no FreeBSD counterpart
    {"natt_in_esp_packets", "natt", "", "ESP packet%s received in UDP"},
    {"natt_in_keepalives", "natt", "", "NAT keepalive%s received"},
    {"natt_in_ike_no_listener", "natt", "", "IKE packet%s with no IKE daemon on the port"},
    {"natt_in_drop_bad", "natt", "", "UDP payload%s neither ESP, IKE nor a keepalive"},
    {"natt_in_new_mapping", "natt", "", "new NAT mapping%s reported"},
    {"natt_out_esp_packets", "natt", "", "ESP packet%s sent in UDP"},
    {"natt_out_keepalives", "natt", "", "NAT keepalive%s sent"},
    {"natt_out_keepalive_errors", "natt", "", "keepalive%s refused by the socket"},
    {"natt_in_oa_adjusted", "natt", "", "transport-mode checksum%s updated from the NAT original addresses"},
    {"natt_in_oa_zeroed", "natt", "", "transport-mode UDP/IPv4 checksum%s cleared (no original address)"},
    {"natt_in_oa_recomputed", "natt", "", "transport-mode checksum%s recomputed (no original address)"},
    {"natt_in_oa_not_needed", "natt", "", "transport-mode packet%s needing no checksum fix-up"},
    {"natt_in_gro_datagrams", "natt", "", "coalesced datagram%s received (UDP GRO)"},
    {"natt_in_gro_segments", "natt", "", "ESP-in-UDP datagram%s split out of them"},
    {"natt_in_gro_drop_bad", "natt", "", "coalesced datagram%s with a bad segment size, dropped"},
    {"natt_in_gro_drop_no_buffer", "natt", "", "segment%s lost for want of a buffer to split into"},
    {"natt_in_gro_parked", "natt", "", "datagram%s kept until buffers were free to split into"},
    {"esp_in_multi_segment_requests", "natt", "", "coalesced datagram%s opened in place as one request"},
    {"esp_in_multi_segment_segments", "natt", "", "ESP packet%s in them"},
    {"esp_in_multi_segment_copied", "natt", "", "opened segment%s judged on a copy (IPComp, upper-layer payload, inner ESP)"},
    {"esp_in_multi_drop_no_buffer", "esp", "esps_qfull",
     "inbound packet%s dropped; no buffer to copy an opened segment into"},
    {"esp_in_multi_split_mixed", "natt", "", "coalesced datagram%s split: not all ESP under one SPI"},
    {"esp_in_multi_split_precheck", "natt", "", "coalesced datagram%s split: a segment failed the pre-check"},
    {"esp_in_multi_split_sa", "natt", "", "coalesced datagram%s split: transport SA or ESN high halves differ"},
    {"esp_in_multi_split_too_many", "natt", "", "coalesced datagram%s split: too many segments for one request"},
    {"natt_out_gso_datagrams", "natt", "", "UDP GSO send%s of several ESP packets"},
    {"natt_out_gso_segments", "natt", "", "ESP packet%s sent in them"},
    {"natt_out_gso_fallback", "natt", "", "GSO send%s refused and sent one by one"},
    {"natt_out_df_switches", "natt", "", "time%s the IPv4 NAT-T socket's DF setting was switched"},
    {"natt_out_drop_df_refused", "natt", "", "IPv4 ESP-in-UDP packet%s dropped: the socket refused their DF setting"},
};

// Per-SA counters (SaCounters), shown under each SA.
inline constexpr std::pair<std::string_view, std::string_view> kSaCounterPhrases[] = {
    {"out_packets", "packet%s out"},
    {"out_bytes", "byte%s out"},
    {"in_packets", "packet%s in"},
    {"in_bytes", "byte%s in"},
    {"in_drop_replay", "possible replay packet%s detected"},
    {"in_drop_bad_icv", "packet%s dropped; bad authentication detected"},
    {"in_drop_other", "packet%s dropped; other reasons"},
};

}  // namespace ipsec::ipsecctl
