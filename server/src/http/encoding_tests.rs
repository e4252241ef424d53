use std::io::Write;

use axum::http::header::CONTENT_ENCODING;
use axum::http::{HeaderMap, HeaderValue};
use flate2::write::GzEncoder;
use flate2::Compression;

use super::*;

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

/// With a checksum, as the zstd command line writes it: a flipped byte is then always caught.
fn zstd(data: &[u8]) -> Vec<u8> {
    let mut encoder = zstd::stream::Encoder::new(Vec::new(), 3).unwrap();
    encoder.include_checksum(true).unwrap();
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

fn compress(coding: Coding, data: &[u8]) -> Vec<u8> {
    match coding {
        Coding::Gzip => gzip(data),
        Coding::Zstd => zstd(data),
    }
}

fn coding_of(values: &[&str]) -> Result<Option<Coding>, String> {
    let mut headers = HeaderMap::new();
    for value in values {
        headers.append(CONTENT_ENCODING, HeaderValue::from_str(value).unwrap());
    }
    Coding::from_headers(&headers).map_err(|error| error.to_string())
}

/// Some text that compresses about as readings do.
fn readings_text(lines: usize) -> Vec<u8> {
    (0..lines)
        .map(|i| {
            format!(
                "{},sensor-{},2026-11-26T10:{:02}:{:02}Z,{}.{:03}\n",
                i % 7,
                i % 4,
                i / 60 % 60,
                i % 60,
                i % 50,
                i % 997
            )
        })
        .collect::<String>()
        .into_bytes()
}

#[test]
fn the_codings_named_are_read_case_blind_and_identity_is_none() {
    assert_eq!(coding_of(&[]), Ok(None));
    assert_eq!(coding_of(&["identity"]), Ok(None));
    assert_eq!(coding_of(&[""]), Ok(None));
    assert_eq!(coding_of(&["gzip"]), Ok(Some(Coding::Gzip)));
    assert_eq!(coding_of(&["x-gzip"]), Ok(Some(Coding::Gzip)));
    assert_eq!(coding_of(&[" GZip "]), Ok(Some(Coding::Gzip)));
    assert_eq!(coding_of(&["zstd"]), Ok(Some(Coding::Zstd)));
    assert_eq!(coding_of(&["identity, zstd"]), Ok(Some(Coding::Zstd)));
    assert_eq!(coding_of(&["identity", "gzip"]), Ok(Some(Coding::Gzip)));
}

#[test]
fn other_codings_and_stacked_ones_are_refused_naming_what_is_read() {
    for values in [
        &["br"][..],
        &["deflate"],
        &["gzip, zstd"],
        &["gzip", "gzip"],
        &["compress"],
    ] {
        let error = coding_of(values).unwrap_err();
        assert!(error.contains("is not supported"), "{values:?}: {error}");
        assert!(error.contains("gzip or zstd"), "{values:?}: {error}");
    }
    assert!(coding_of(&["gzip, zstd"]).unwrap_err().contains("stacked"));
}

#[test]
fn each_coding_decodes_to_the_bytes_compressed() {
    let text = readings_text(5_000);
    for coding in [Coding::Gzip, Coding::Zstd] {
        let compressed = compress(coding, &text);
        assert!(compressed.len() < text.len() / 3, "{coding:?}");
        assert_eq!(
            decode(coding, &compressed, text.len()).unwrap(),
            text,
            "{coding:?}"
        );
        // Fed a byte at a time, as a trickling client sends it.
        let mut decoder = Decoder::new(coding, text.len());
        for byte in &compressed {
            decoder.write(std::slice::from_ref(byte)).unwrap();
        }
        assert_eq!(decoder.finish().unwrap(), text, "{coding:?} byte by byte");
    }
}

#[test]
fn gzip_members_and_zstd_frames_in_a_row_are_one_body() {
    for coding in [Coding::Gzip, Coding::Zstd] {
        let mut compressed = compress(coding, b"first,");
        compressed.extend(compress(coding, b"second"));
        assert_eq!(
            decode(coding, &compressed, 100).unwrap(),
            b"first,second",
            "{coding:?}"
        );
    }
}

#[test]
fn a_body_of_exactly_the_limit_is_read_and_one_byte_more_is_not() {
    let text = readings_text(1_000);
    for coding in [Coding::Gzip, Coding::Zstd] {
        let compressed = compress(coding, &text);
        assert_eq!(decode(coding, &compressed, text.len()).unwrap().len(), text.len());
        assert_eq!(
            decode(coding, &compressed, text.len() - 1),
            Err(DecodeError::TooLarge(text.len() - 1)),
            "{coding:?}"
        );
    }
}

#[test]
fn a_bomb_is_stopped_at_the_limit_without_reading_on() {
    // 16 MiB of zeros compressed, 64 times in a row (gzip members, zstd frames): 1 GiB, against a
    // 256 KiB limit, fed in 1 KiB pieces.
    let zeros = vec![0u8; 16 * 1024 * 1024];
    let limit = 256 * 1024;
    for coding in [Coding::Gzip, Coding::Zstd] {
        let one = compress(coding, &zeros);
        assert!(one.len() < 64 * 1024, "{coding:?}: {} bytes", one.len());
        let bomb = one.repeat(64);
        let mut decoder = Decoder::new(coding, limit);
        let mut fed = 0;
        let error = bomb
            .chunks(1024)
            .find_map(|piece| {
                fed += piece.len();
                decoder.write(piece).err()
            })
            .expect("refused");
        assert_eq!(error, DecodeError::TooLarge(limit), "{coding:?}");
        assert!(decoder.decoded() <= limit, "{coding:?}");
        // Refused within the first 16 MiB: nothing after it was read.
        assert!(fed <= one.len() + 1024, "{coding:?}: fed {fed} of {}", bomb.len());
    }
}

#[test]
fn corrupt_truncated_and_empty_streams_are_refused_as_such() {
    let text = readings_text(2_000);
    for coding in [Coding::Gzip, Coding::Zstd] {
        let name = coding.name();
        let compressed = compress(coding, &text);
        let mut flipped = compressed.clone();
        let middle = flipped.len() / 2;
        flipped[middle] ^= 0xff;
        flipped[middle + 1] ^= 0x55;
        let cut = &compressed[..compressed.len() - 5];
        for (what, input) in [
            ("flipped", &flipped[..]),
            ("cut", cut),
            ("empty", &[][..]),
            ("not compressed", &text[..]),
        ] {
            match decode(coding, input, 10 * text.len()) {
                Err(DecodeError::Corrupt { coding, .. }) => assert_eq!(coding, name),
                other => panic!("{name}, {what}: {other:?}"),
            }
        }
    }
}

#[test]
fn a_zstd_frame_asking_for_a_window_over_8_mib_is_refused_before_any_allocation() {
    // Magic, a descriptor with no content size, a window descriptor, and one raw block of "x".
    let frame = |window_descriptor: u8| {
        let mut frame = vec![0x28, 0xb5, 0x2f, 0xfd, 0x00, window_descriptor];
        frame.extend([0x09, 0x00, 0x00, b'x']);
        frame
    };
    // Exponent 13: 2^23 bytes, 8 MiB; exponent 17: 2^27, 128 MiB.
    assert_eq!(decode(Coding::Zstd, &frame(13 << 3), 10).unwrap(), b"x");
    let refused = decode(Coding::Zstd, &frame(17 << 3), 10).unwrap_err();
    assert!(matches!(refused, DecodeError::Corrupt { .. }), "{refused:?}");
}

#[test]
fn decoding_errors_become_400_and_413_in_the_envelope() {
    let corrupt: ApiError = DecodeError::Corrupt {
        coding: "gzip",
        detail: "invalid gzip header".into(),
    }
    .into();
    assert_eq!(
        corrupt.to_string(),
        "the request body is not valid gzip: invalid gzip header"
    );
    assert!(matches!(corrupt, ApiError::Malformed(_)));
    let too_large: ApiError = DecodeError::TooLarge(1024).into();
    assert!(too_large.to_string().contains("decompressed"), "{too_large}");
    assert!(matches!(too_large, ApiError::DecodedTooLarge(1024)));
}
