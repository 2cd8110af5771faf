/** End-to-end encryption cannot work on this device as things stand (no local store, lost keys). */
export class E2eeUnavailable extends Error {}
