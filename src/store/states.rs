//! The states the store keeps as text: each an enum with one string mapping, bound in queries
//! as itself, and read back strictly (an unknown value is an error naming its row, never a
//! quiet default).

use sqlx::{Any, Database, Encode, Type, any::AnyTypeInfo, encode::IsNull, error::BoxDynError};

/// A stored text that names no known state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{value:?} is not a known {kind}")]
pub struct UnknownState {
    pub kind: &'static str,
    pub value: String,
}

/// Declares an enum stored as text: `as_str`, `ALL`, strict parsing, and binding in queries.
macro_rules! stored_state {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $($(#[$variant_meta:meta])* $variant:ident = $text:literal,)+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$variant_meta])* $variant,)+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [Self] = &[$(Self::$variant),+];

            /// The stored text, also the label in metrics and logs.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text,)+
                }
            }
        }

        impl std::str::FromStr for $name {
            type Err = UnknownState;

            fn from_str(value: &str) -> Result<Self, UnknownState> {
                match value {
                    $($text => Ok(Self::$variant),)+
                    _ => Err(UnknownState {
                        kind: stringify!($name),
                        value: value.to_owned(),
                    }),
                }
            }
        }

        impl Type<Any> for $name {
            fn type_info() -> AnyTypeInfo {
                <str as Type<Any>>::type_info()
            }
        }

        impl Encode<'_, Any> for $name {
            fn encode_by_ref(
                &self,
                buf: &mut <Any as Database>::ArgumentBuffer,
            ) -> Result<IsNull, BoxDynError> {
                <&str as Encode<Any>>::encode(self.as_str(), buf)
            }
        }
    };
}

stored_state! {
    /// Where a mailbox stands in its authorization. `Pending` is never stored: Status derives
    /// it from an unused sign-in link.
    pub enum ConnectionState {
        NotConnected = "not_connected",
        Pending = "pending",
        Connected = "connected",
        ReauthorizationRequired = "reauthorization_required",
    }
}

stored_state! {
    /// Where a send under an idempotency key stands.
    pub enum IdempotencyStatus {
        /// A call is sending now (or crashed while sending).
        InProgress = "in_progress",
        /// Microsoft accepted the message.
        Sent = "sent",
        /// The request left but no answer came: Microsoft may or may not have accepted it.
        Unknown = "unknown",
    }
}

stored_state! {
    /// What a `last_error` is about; a later success of the same kind clears it.
    pub enum ErrorSource {
        /// Connecting or refreshing tokens.
        Token = "token",
        /// Sending.
        Send = "send",
    }
}

stored_state! {
    /// Where a queued message stands (see `MessageState` in the proto).
    pub enum MessageState {
        Queued = "queued",
        Sending = "sending",
        Sent = "sent",
        Failed = "failed",
        Unknown = "unknown",
        Cancelled = "cancelled",
    }
}

impl MessageState {
    /// Whether nothing will happen to the message any more.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Sent | Self::Failed | Self::Cancelled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_state_reads_back_as_itself_and_nothing_else_is_accepted() {
        for state in ConnectionState::ALL {
            assert_eq!(state.as_str().parse::<ConnectionState>(), Ok(*state));
        }
        for status in IdempotencyStatus::ALL {
            assert_eq!(status.as_str().parse::<IdempotencyStatus>(), Ok(*status));
        }
        let error = "conected".parse::<ConnectionState>().unwrap_err();
        assert_eq!(
            error.to_string(),
            "\"conected\" is not a known ConnectionState"
        );
    }
}
