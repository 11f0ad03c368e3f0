// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

/// @title CidCodec
/// @notice CIDv1 strings in multibase base32 ("b" + 58 lowercase characters), as Kubo writes
/// them, to and from their 36 binary bytes: version 1, a codec, a 32-byte multihash.
/// The registry stores the 32-byte digest and the codec, not the 59-character string
/// (one storage slot instead of three), and rebuilds the string for its views and events.
/// The mapping is a bijection on what `decode` accepts: 59 characters, "b", the lowercase
/// RFC 4648 alphabet, zero padding bits; so a stored CID reads back as exactly the string
/// that was registered.
library CidCodec {
    uint8 internal constant VERSION = 0x01;
    uint8 internal constant RAW = 0x55; // a single block: the file's bytes themselves
    uint8 internal constant DAG_PB = 0x70; // a UnixFS DAG's root
    uint8 internal constant SHA2_256 = 0x12;
    uint8 internal constant KECCAK_256 = 0x1b;
    uint256 internal constant LENGTH = 59; // "b" + ceil(36 * 8 / 5)

    bytes32 private constant ALPHABET = "abcdefghijklmnopqrstuvwxyz234567";

    /// @notice The 4-byte prefix (version, codec, hash function, digest length 32) and the
    /// digest of `cid`; ok is false for anything else than a canonical 59-character string.
    function decode(string calldata cid) internal pure returns (bool ok, uint32 prefix, bytes32 digest) {
        if (bytes(cid).length != LENGTH || bytes(cid)[0] != "b") return (false, 0, 0);
        uint256 hi; // the 290-bit number the 58 characters spell, in two words
        uint256 lo;
        uint256 bad;
        assembly {
            let p := add(cid.offset, 1)
            let end := add(cid.offset, 59)
            for {} lt(p, end) { p := add(p, 1) } {
                let c := byte(0, calldataload(p))
                let v
                switch lt(c, 0x61)
                case 1 {
                    // '2'..'7' -> 26..31
                    bad := or(bad, or(lt(c, 0x32), gt(c, 0x37)))
                    v := sub(c, 24)
                }
                default {
                    // 'a'..'z' -> 0..25
                    bad := or(bad, gt(c, 0x7a))
                    v := sub(c, 0x61)
                }
                hi := or(shl(5, hi), shr(251, lo))
                lo := or(shl(5, lo), and(v, 31))
            }
        }
        // 290 bits = 32-bit prefix, 256-bit digest, 2 padding bits (zero when canonical).
        if (bad != 0 || lo & 3 != 0) return (false, 0, 0);
        return (true, uint32(hi >> 2), bytes32((lo >> 2) | (hi << 254)));
    }

    /// @notice The CIDv1 string of a 4-byte prefix and a 32-byte digest.
    function encode(uint32 prefix, bytes32 digest) internal pure returns (string memory cid) {
        cid = new string(LENGTH);
        uint256 hi = (uint256(prefix) << 2) | (uint256(digest) >> 254);
        uint256 lo = uint256(digest) << 2;
        bytes32 alphabet = ALPHABET;
        assembly {
            let out := add(cid, 32)
            mstore8(out, 0x62) // "b"
            for { let i := 0 } lt(i, 58) { i := add(i, 1) } {
                let k := sub(285, mul(5, i)) // the character's lowest bit in the 290-bit number
                let v
                switch lt(k, 256)
                case 1 { v := or(shr(k, lo), shl(sub(256, k), hi)) }
                default { v := shr(sub(k, 256), hi) }
                mstore8(add(out, add(i, 1)), byte(and(v, 31), alphabet))
            }
        }
    }

    function prefixOf(uint8 codec, uint8 hashFunction) internal pure returns (uint32) {
        return (uint32(VERSION) << 24) | (uint32(codec) << 16) | (uint32(hashFunction) << 8) | 32;
    }
}
