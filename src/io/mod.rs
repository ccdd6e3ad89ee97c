//! Byte streams the layers hand each other, a leaf: a stream with bytes put back in
//! front ([`Rewound`]), and the connections of a protocol switch ([`TunnelIo`],
//! [`ClientUpgrade`]).

mod rewound;
mod tunnel;

pub use rewound::Rewound;
pub use tunnel::{ClientUpgrade, TunnelIo, TunnelSender};
