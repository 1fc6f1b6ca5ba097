export { Switchboard } from './switchboard.js';
export { SwitchboardError, ErrorCode, CloseCode, isTerminalClose } from './errors.js';
export { Subscription, compareOffsets } from './subscription.js';
export { Room, mergePatch } from './room.js';
