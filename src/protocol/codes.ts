/**
 * The type byte of every PostgreSQL message after start-up, by name, and the
 * other one-byte codes messages carry. Each is the ASCII letter the protocol
 * documentation gives it.
 * https://www.postgresql.org/docs/current/protocol-message-formats.html
 */

/** Messages the server sends. */
export const Backend = {
  /** AuthenticationOk, …SASL, …SASLContinue, …SASLFinal and the rest: the code follows. */
  Authentication: 0x52 /* 'R' */,
  BackendKeyData: 0x4b /* 'K' */,
  BindComplete: 0x32 /* '2' */,
  CloseComplete: 0x33 /* '3' */,
  CommandComplete: 0x43 /* 'C' */,
  CopyBothResponse: 0x57 /* 'W' */,
  CopyData: 0x64 /* 'd' */,
  CopyDone: 0x63 /* 'c' */,
  CopyInResponse: 0x47 /* 'G' */,
  CopyOutResponse: 0x48 /* 'H' */,
  DataRow: 0x44 /* 'D' */,
  EmptyQueryResponse: 0x49 /* 'I' */,
  ErrorResponse: 0x45 /* 'E' */,
  FunctionCallResponse: 0x56 /* 'V' */,
  NegotiateProtocolVersion: 0x76 /* 'v' */,
  NoData: 0x6e /* 'n' */,
  NoticeResponse: 0x4e /* 'N' */,
  NotificationResponse: 0x41 /* 'A' */,
  ParameterDescription: 0x74 /* 't' */,
  ParameterStatus: 0x53 /* 'S' */,
  ParseComplete: 0x31 /* '1' */,
  PortalSuspended: 0x73 /* 's' */,
  ReadyForQuery: 0x5a /* 'Z' */,
  RowDescription: 0x54 /* 'T' */,
} as const;

/** Messages the client sends (after its start-up packet). */
export const Frontend = {
  Bind: 0x42 /* 'B' */,
  Close: 0x43 /* 'C' */,
  CopyData: 0x64 /* 'd' */,
  CopyDone: 0x63 /* 'c' */,
  CopyFail: 0x66 /* 'f' */,
  Describe: 0x44 /* 'D' */,
  Execute: 0x45 /* 'E' */,
  Flush: 0x48 /* 'H' */,
  FunctionCall: 0x46 /* 'F' */,
  Parse: 0x50 /* 'P' */,
  /** PasswordMessage, GSSResponse, SASLInitialResponse and SASLResponse share it. */
  PasswordMessage: 0x70 /* 'p' */,
  Query: 0x51 /* 'Q' */,
  /** SASLInitialResponse and SASLResponse: PasswordMessage's byte. */
  SASLResponse: 0x70 /* 'p' */,
  Sync: 0x53 /* 'S' */,
  Terminate: 0x58 /* 'X' */,
} as const;

/** What a Describe or Close names: a prepared statement or a portal (its first payload byte). */
export const Target = {
  Statement: 0x53 /* 'S' */,
  Portal: 0x50 /* 'P' */,
} as const;

/** The transaction status a ReadyForQuery carries. */
export const TxStatus = {
  Idle: 0x49 /* 'I' */,
  InBlock: 0x54 /* 'T' */,
  Failed: 0x45 /* 'E' */,
} as const;
