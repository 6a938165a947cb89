//! Feeds arbitrary bytes to the frame decoder in both directions: it must
//! return a frame, "need more", or an error, and never panic or allocate
//! beyond the frame limit. Anything it decodes must re-encode to a frame
//! that decodes to the same message.

#![no_main]

use husk_protocol::{Envelope, GuestMsg, HostMsg, decode_frame, encode_frame};
use libfuzzer_sys::fuzz_target;

fn check<M>(data: &[u8])
where
    M: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    if let Ok(Some((env, used))) = decode_frame::<M>(data) {
        assert!(used <= data.len());
        let mut again = Vec::new();
        encode_frame(&env, &mut again).expect("a decoded frame re-encodes");
        let (back, _) = decode_frame::<M>(&again).expect("re-decodes").expect("complete");
        let Envelope { id, msg } = back;
        assert_eq!(id, env.id);
        assert_eq!(msg, env.msg);
    }
}

fuzz_target!(|data: &[u8]| {
    check::<HostMsg>(data);
    check::<GuestMsg>(data);
});
