"""Media bridges: contact-centre platforms' own protocols (Genesys AudioHook, Twilio Media
Streams, Asterisk AudioSocket) translated to live calls. A bridge authenticates its peer,
parses frames and feeds the call's session; it decides nothing itself."""
