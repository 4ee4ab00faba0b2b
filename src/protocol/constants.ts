/**
 * PostgreSQL wire protocol numbers.
 * https://www.postgresql.org/docs/current/protocol-message-formats.html
 */

/** Protocol version 3.0 as sent in StartupMessage: major 3 in the high 16 bits. */
export const PROTOCOL_3_0 = (3 << 16) | 0;
/** Protocol 3.2 (PostgreSQL 18): BackendKeyData carries a secret of 4 to 256 bytes. */
export const PROTOCOL_3_2 = (3 << 16) | 2;
/** Request codes that take the place of a protocol version in the first packet. */
export const CANCEL_REQUEST_CODE = 80877102;
export const SSL_REQUEST_CODE = 80877103;
export const GSSENC_REQUEST_CODE = 80877104;
/** A start-up packet is at least length + code; PostgreSQL refuses ones over 10,000 bytes (MAX_STARTUP_PACKET_LENGTH). */
export const MIN_STARTUP_PACKET = 8;
export const MAX_STARTUP_PACKET = 10_000;

/** The message type bytes under their earlier names (protocol/codes.ts has them all). */
export { Backend as BackendMessage, Frontend as FrontendMessage } from './codes.js';

/** Authentication request codes carried in an 'R' message. */
export const AUTH_OK = 0;
/** AuthenticationSASL: the payload lists the mechanisms, each a C string, ended by an empty one. */
export const AUTH_SASL = 10;
export const AUTH_SASL_CONTINUE = 11;
export const AUTH_SASL_FINAL = 12;
