//! The codec of the Mailer service: prost's, with one step before decoding. A request's
//! repeated fields are counted on the wire first, so ten million tiny recipients or two hundred
//! thousand headers are refused by their count (INVALID_ARGUMENT naming the list) instead of
//! being decoded into a gigabyte of structures and parsed one by one.
//!
//! `build.rs` points the generated code at [`CheckedCodec`]; each message type says through
//! [`Precheck`] what to count (most: nothing).

use std::marker::PhantomData;

use bytes::Buf;
use prost::Message;
use tonic::{
    Status,
    codec::{BufferSettings, Codec, DecodeBuf, Decoder},
};
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

use crate::{domain::ListCounts, proto};

/// What to check of a message's encoded bytes before decoding them.
pub trait Precheck {
    /// `Err` refuses the message without decoding it.
    fn precheck(_encoded: &[u8]) -> Result<(), Status> {
        Ok(())
    }
}

/// Prost's codec with [`Precheck`] before decoding.
#[derive(Debug, Clone)]
pub struct CheckedCodec<T, U> {
    _types: PhantomData<(T, U)>,
}

impl<T, U> Default for CheckedCodec<T, U> {
    fn default() -> Self {
        Self {
            _types: PhantomData,
        }
    }
}

impl<T, U> Codec for CheckedCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Precheck + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = CheckedDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstCodec::<T, U>::default().encoder()
    }

    fn decoder(&mut self) -> Self::Decoder {
        CheckedDecoder {
            inner: ProstCodec::<T, U>::default().decoder(),
        }
    }
}

/// Prost's decoder behind the precheck.
#[derive(Debug)]
pub struct CheckedDecoder<U> {
    inner: ProstDecoder<U>,
}

impl<U: Message + Default + Precheck> Decoder for CheckedDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        let remaining = buf.remaining();
        if buf.chunk().len() >= remaining {
            U::precheck(&buf.chunk()[..remaining])?;
            return self.inner.decode(buf);
        }
        // A message in pieces (tonic buffers whole messages, so this is not expected): check
        // and decode a contiguous copy.
        let bytes = buf.copy_to_bytes(remaining);
        U::precheck(&bytes)?;
        U::decode(bytes)
            .map(Some)
            .map_err(|error| Status::internal(error.to_string()))
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.inner.buffer_settings()
    }
}

/// Counts, per field number in `fields`, how often each occurs at the top level of an encoded
/// message. `None` when the bytes are not a well-formed message (decoding will then say so).
pub fn count_fields<const N: usize>(mut bytes: &[u8], fields: [u32; N]) -> Option<[usize; N]> {
    let mut counts = [0usize; N];
    while !bytes.is_empty() {
        let key = varint(&mut bytes)?;
        let number = u32::try_from(key >> 3).ok()?;
        match key & 7 {
            0 => {
                varint(&mut bytes)?;
            }
            1 => bytes = bytes.get(8..)?,
            2 => {
                let len = usize::try_from(varint(&mut bytes)?).ok()?;
                bytes = bytes.get(len..)?;
            }
            5 => bytes = bytes.get(4..)?,
            _ => return None,
        }
        if let Some(i) = fields.iter().position(|f| *f == number) {
            counts[i] += 1;
        }
    }
    Some(counts)
}

/// The bytes of the last top-level length-delimited field `number` (an embedded message).
pub fn embedded(mut bytes: &[u8], number: u32) -> Option<&[u8]> {
    let mut found = None;
    while !bytes.is_empty() {
        let key = varint(&mut bytes)?;
        match key & 7 {
            0 => {
                varint(&mut bytes)?;
            }
            1 => bytes = bytes.get(8..)?,
            2 => {
                let len = usize::try_from(varint(&mut bytes)?).ok()?;
                if key >> 3 == u64::from(number) {
                    found = Some(bytes.get(..len)?);
                }
                bytes = bytes.get(len..)?;
            }
            5 => bytes = bytes.get(4..)?,
            _ => return None,
        }
    }
    found
}

fn varint(bytes: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = bytes.split_first()?;
        *bytes = rest;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// The list counts of an encoded SendMailRequest (fields to=2, cc=3, bcc=4, reply_to=5,
/// attachments=9, headers=10).
pub fn send_mail_counts(encoded: &[u8]) -> Option<ListCounts> {
    let [to, cc, bcc, reply_to, attachments, headers] = count_fields(encoded, [2, 3, 4, 5, 9, 10])?;
    Some(ListCounts {
        recipients: to + cc + bcc,
        reply_to,
        attachments,
        headers,
    })
}

impl Precheck for proto::SendMailRequest {
    fn precheck(encoded: &[u8]) -> Result<(), Status> {
        match send_mail_counts(encoded) {
            Some(counts) => counts.check().map_err(Status::from),
            None => Ok(()),
        }
    }
}

impl Precheck for proto::QueueMailRequest {
    /// The message inside is counted as SendMail's is.
    fn precheck(encoded: &[u8]) -> Result<(), Status> {
        match embedded(encoded, 1).and_then(send_mail_counts) {
            Some(counts) => counts.check().map_err(|error| {
                Status::from(crate::domain::ValidationError::new(
                    format!("message.{}", error.field),
                    error.reason,
                ))
            }),
            None => Ok(()),
        }
    }
}

impl Precheck for proto::SendBulkRequest {
    /// At most 10,000 recipients, counted before they are decoded; the template's lists as
    /// SendMail's.
    fn precheck(encoded: &[u8]) -> Result<(), Status> {
        if let Some([recipients]) = count_fields(encoded, [2])
            && recipients > crate::outbox::bulk::MAX_BULK_RECIPIENTS
        {
            return Err(Status::from(crate::domain::ValidationError::new(
                "recipients",
                format!(
                    "{recipients} recipients; a batch has 1 to {}",
                    crate::outbox::bulk::MAX_BULK_RECIPIENTS
                ),
            )));
        }
        match embedded(encoded, 1).and_then(send_mail_counts) {
            Some(counts) => counts.check().map_err(|error| {
                Status::from(crate::domain::ValidationError::new(
                    format!("template.{}", error.field),
                    error.reason,
                ))
            }),
            None => Ok(()),
        }
    }
}

/// Messages with nothing to count.
macro_rules! nothing_to_count {
    ($($message:ty),+ $(,)?) => {
        $(impl Precheck for $message {})+
    };
}

nothing_to_count!(
    proto::ConnectRequest,
    proto::ConnectResponse,
    proto::SendMailResponse,
    proto::StatusRequest,
    proto::StatusResponse,
    proto::DisconnectRequest,
    proto::DisconnectResponse,
    proto::QueueMailResponse,
    proto::SendBulkResponse,
    proto::GetMessageRequest,
    proto::MessageStatus,
    proto::ListMessagesRequest,
    proto::ListMessagesResponse,
    proto::CancelMessageRequest,
    proto::GetBatchRequest,
    proto::CancelBatchRequest,
    proto::BatchStatus,
    proto::WatchMessagesRequest,
    proto::MessageEvent,
);

#[cfg(test)]
mod tests {
    use super::*;

    fn request(recipients: usize, headers: usize) -> Vec<u8> {
        let to = (0..recipients)
            .map(|i| proto::EmailAddress {
                address: format!("r{i}@example.com"),
                name: String::new(),
            })
            .collect();
        let headers = (0..headers)
            .map(|i| (format!("X-H{i}"), "v".to_owned()))
            .collect();
        proto::SendMailRequest {
            mailbox: "noreply@contoso.com".into(),
            to,
            headers,
            subject: "Hi".into(),
            importance: 3,
            ..Default::default()
        }
        .encode_to_vec()
    }

    #[test]
    fn lists_are_counted_on_the_wire() {
        let counts = send_mail_counts(&request(7, 3)).unwrap();
        assert_eq!(counts.recipients, 7);
        assert_eq!(counts.headers, 3);
    }

    #[test]
    fn too_many_entries_are_refused_before_decoding() {
        let status = proto::SendMailRequest::precheck(&request(501, 0)).unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(
            status.message().starts_with("recipients:"),
            "{}",
            status.message()
        );
        let status = proto::SendMailRequest::precheck(&request(1, 51)).unwrap_err();
        assert!(
            status.message().starts_with("headers:"),
            "{}",
            status.message()
        );
        assert!(proto::SendMailRequest::precheck(&request(500, 50)).is_ok());
    }

    #[test]
    fn malformed_bytes_are_left_to_the_decoder() {
        assert_eq!(send_mail_counts(&[0x12, 0xff]), None);
        assert_eq!(send_mail_counts(&[0x0b]), None);
        assert!(proto::SendMailRequest::precheck(&[0xff; 20]).is_ok());
        let outer = proto::SendMailRequest {
            subject: "x".into(),
            ..Default::default()
        }
        .encode_to_vec();
        assert_eq!(embedded(&outer, 6), Some(&b"x"[..]));
    }
}
