/*eslint-disable block-scoped-var, id-length, no-control-regex, no-magic-numbers, no-mixed-operators, no-prototype-builtins, no-redeclare, no-shadow, no-var, sort-vars, default-case, jsdoc/require-param*/
import $protobuf from "npm:protobufjs@8.8.1/minimal.js";

const $Reader = $protobuf.Reader, $Writer = $protobuf.Writer, $util = $protobuf.util;
const $Object = $util.global.Object, $undefined = $util.global.undefined, $Error = $util.global.Error, $RangeError = $util.global.RangeError;

const $root = $protobuf.roots["default"] || ($protobuf.roots["default"] = {});

export const codex = $root.codex = (() => {

    const codex = {};

    codex.exec_server = (function() {

        const exec_server = {};

        exec_server.relay = (function() {

            const relay = {};

            relay.v1 = (function() {

                const v1 = {};

                v1.RelayMessageFrame = (function() {

                    const RelayMessageFrame = function (properties) {
                        if (properties)
                            for (let keys = $Object.keys(properties), i = 0; i < keys.length; ++i)
                                if (properties[keys[i]] != null && keys[i] !== "__proto__")
                                    this[keys[i]] = properties[keys[i]];
                    };

                    RelayMessageFrame.prototype.version = 0;
                    RelayMessageFrame.prototype.streamId = "";
                    RelayMessageFrame.prototype.ack = 0;
                    RelayMessageFrame.prototype.ackBits = 0;
                    RelayMessageFrame.prototype.data = null;
                    RelayMessageFrame.prototype.ackFrame = null;
                    RelayMessageFrame.prototype.resume = null;
                    RelayMessageFrame.prototype.reset = null;
                    RelayMessageFrame.prototype.heartbeat = null;
                    RelayMessageFrame.prototype.handshake = null;
                    RelayMessageFrame.prototype.traceparent = null;
                    RelayMessageFrame.prototype.tracestate = null;

                    let $oneOfFields;

                    $Object.defineProperty(RelayMessageFrame.prototype, "body", {
                        get: $util.oneOfGetter($oneOfFields = ["data", "ackFrame", "resume", "reset", "heartbeat", "handshake"]),
                        set: $util.oneOfSetter($oneOfFields)
                    });

                    // Virtual OneOf for proto3 optional field
                    $Object.defineProperty(RelayMessageFrame.prototype, "_traceparent", {
                        get: $util.oneOfGetter($oneOfFields = ["traceparent"]),
                        set: $util.oneOfSetter($oneOfFields)
                    });

                    // Virtual OneOf for proto3 optional field
                    $Object.defineProperty(RelayMessageFrame.prototype, "_tracestate", {
                        get: $util.oneOfGetter($oneOfFields = ["tracestate"]),
                        set: $util.oneOfSetter($oneOfFields)
                    });

                    RelayMessageFrame.encode = function (message, writer, _depth) {
                        if (!writer)
                            writer = $Writer.create();
                        if (_depth === $undefined)
                            _depth = 0;
                        if (_depth > $util.recursionLimit)
                            throw $Error("max depth exceeded");
                        if (message.version != null && $Object.hasOwnProperty.call(message, "version") && message.version !== 0)
                            writer.uint32(8).uint32(message.version);
                        if (message.streamId != null && $Object.hasOwnProperty.call(message, "streamId") && message.streamId !== "")
                            writer.uint32(18).string(message.streamId);
                        if (message.ack != null && $Object.hasOwnProperty.call(message, "ack") && message.ack !== 0)
                            writer.uint32(24).uint32(message.ack);
                        if (message.ackBits != null && $Object.hasOwnProperty.call(message, "ackBits") && message.ackBits !== 0)
                            writer.uint32(32).uint32(message.ackBits);
                        if (message.data != null && $Object.hasOwnProperty.call(message, "data"))
                            $root.codex.exec_server.relay.v1.RelayData.encode(message.data, writer.uint32(42).fork(), _depth + 1).ldelim();
                        if (message.ackFrame != null && $Object.hasOwnProperty.call(message, "ackFrame"))
                            $root.codex.exec_server.relay.v1.RelayAck.encode(message.ackFrame, writer.uint32(50).fork(), _depth + 1).ldelim();
                        if (message.resume != null && $Object.hasOwnProperty.call(message, "resume"))
                            $root.codex.exec_server.relay.v1.RelayResume.encode(message.resume, writer.uint32(58).fork(), _depth + 1).ldelim();
                        if (message.reset != null && $Object.hasOwnProperty.call(message, "reset"))
                            $root.codex.exec_server.relay.v1.RelayReset.encode(message.reset, writer.uint32(66).fork(), _depth + 1).ldelim();
                        if (message.heartbeat != null && $Object.hasOwnProperty.call(message, "heartbeat"))
                            $root.codex.exec_server.relay.v1.RelayHeartbeat.encode(message.heartbeat, writer.uint32(74).fork(), _depth + 1).ldelim();
                        if (message.handshake != null && $Object.hasOwnProperty.call(message, "handshake"))
                            $root.codex.exec_server.relay.v1.RelayHandshake.encode(message.handshake, writer.uint32(82).fork(), _depth + 1).ldelim();
                        if (message.traceparent != null && $Object.hasOwnProperty.call(message, "traceparent"))
                            writer.uint32(90).string(message.traceparent);
                        if (message.tracestate != null && $Object.hasOwnProperty.call(message, "tracestate"))
                            writer.uint32(98).string(message.tracestate);
                        if (message.$unknowns != null && $Object.hasOwnProperty.call(message, "$unknowns"))
                            for (let i = 0; i < message.$unknowns.length; ++i)
                                writer.raw(message.$unknowns[i]);
                        return writer;
                    };

                    RelayMessageFrame.decode = function (reader, length, _end, _depth, _target) {
                        if (!(reader instanceof $Reader))
                            reader = $Reader.create(reader);
                        if (_depth === $undefined)
                            _depth = 0;
                        if (_depth > $Reader.recursionLimit)
                            throw $Error("max depth exceeded");
                        let end, message, value;
                        if (length === $undefined)
                            end = reader.len;
                        else {
                            end = reader.pos + length;
                            if (end > reader.len)
                                throw $RangeError("index out of range");
                            length = reader.len;
                            reader.len = end;
                        }
                        message = _target || new $root.codex.exec_server.relay.v1.RelayMessageFrame();
                        while (reader.pos < end) {
                            let start = reader.pos;
                            let tag = reader.tag();
                            if (tag === _end) {
                                _end = $undefined;
                                break;
                            }
                            let wireType = tag & 7;
                            switch (tag >>>= 3) {
                            case 1: {
                                    if (wireType !== 0)
                                        break;
                                    if (value = reader.uint32())
                                        message.version = value;
                                    else
                                        delete message.version;
                                    continue;
                                }
                            case 2: {
                                    if (wireType !== 2)
                                        break;
                                    if ((value = reader.stringVerify()).length)
                                        message.streamId = value;
                                    else
                                        delete message.streamId;
                                    continue;
                                }
                            case 3: {
                                    if (wireType !== 0)
                                        break;
                                    if (value = reader.uint32())
                                        message.ack = value;
                                    else
                                        delete message.ack;
                                    continue;
                                }
                            case 4: {
                                    if (wireType !== 0)
                                        break;
                                    if (value = reader.uint32())
                                        message.ackBits = value;
                                    else
                                        delete message.ackBits;
                                    continue;
                                }
                            case 5: {
                                    if (wireType !== 2)
                                        break;
                                    message.data = $root.codex.exec_server.relay.v1.RelayData.decode(reader, reader.size(), $undefined, _depth + 1, message.data);
                                    message.body = "data";
                                    continue;
                                }
                            case 6: {
                                    if (wireType !== 2)
                                        break;
                                    message.ackFrame = $root.codex.exec_server.relay.v1.RelayAck.decode(reader, reader.size(), $undefined, _depth + 1, message.ackFrame);
                                    message.body = "ackFrame";
                                    continue;
                                }
                            case 7: {
                                    if (wireType !== 2)
                                        break;
                                    message.resume = $root.codex.exec_server.relay.v1.RelayResume.decode(reader, reader.size(), $undefined, _depth + 1, message.resume);
                                    message.body = "resume";
                                    continue;
                                }
                            case 8: {
                                    if (wireType !== 2)
                                        break;
                                    message.reset = $root.codex.exec_server.relay.v1.RelayReset.decode(reader, reader.size(), $undefined, _depth + 1, message.reset);
                                    message.body = "reset";
                                    continue;
                                }
                            case 9: {
                                    if (wireType !== 2)
                                        break;
                                    message.heartbeat = $root.codex.exec_server.relay.v1.RelayHeartbeat.decode(reader, reader.size(), $undefined, _depth + 1, message.heartbeat);
                                    message.body = "heartbeat";
                                    continue;
                                }
                            case 10: {
                                    if (wireType !== 2)
                                        break;
                                    message.handshake = $root.codex.exec_server.relay.v1.RelayHandshake.decode(reader, reader.size(), $undefined, _depth + 1, message.handshake);
                                    message.body = "handshake";
                                    continue;
                                }
                            case 11: {
                                    if (wireType !== 2)
                                        break;
                                    message.traceparent = reader.stringVerify();
                                    message._traceparent = "traceparent";
                                    continue;
                                }
                            case 12: {
                                    if (wireType !== 2)
                                        break;
                                    message.tracestate = reader.stringVerify();
                                    message._tracestate = "tracestate";
                                    continue;
                                }
                            }
                            reader.skipType(wireType, _depth, tag);
                            if (!reader.discardUnknown) {
                                $util.makeProp(message, "$unknowns", false);
                                (message.$unknowns || (message.$unknowns = [])).push(reader.raw(start, reader.pos));
                            }
                        }
                        if (length !== $undefined) {
                            if (reader.pos !== end)
                                throw $RangeError("index out of range");
                            reader.len = length;
                        }
                        if (_end !== $undefined)
                            throw $Error("missing end group");
                        return message;
                    };

                    RelayMessageFrame.getTypeUrl = function(prefix) {
                        if (prefix === $undefined)
                            prefix = "type.googleapis.com";
                        return prefix + "/codex.exec_server.relay.v1.RelayMessageFrame";
                    };

                    return RelayMessageFrame;
                })();

                v1.RelayData = (function() {

                    const RelayData = function (properties) {
                        if (properties)
                            for (let keys = $Object.keys(properties), i = 0; i < keys.length; ++i)
                                if (properties[keys[i]] != null && keys[i] !== "__proto__")
                                    this[keys[i]] = properties[keys[i]];
                    };

                    RelayData.prototype.seq = 0;
                    RelayData.prototype.segmentIndex = 0;
                    RelayData.prototype.segmentCount = 0;
                    RelayData.prototype.payload = $util.newBuffer([]);

                    RelayData.encode = function (message, writer, _depth) {
                        if (!writer)
                            writer = $Writer.create();
                        if (_depth === $undefined)
                            _depth = 0;
                        if (_depth > $util.recursionLimit)
                            throw $Error("max depth exceeded");
                        if (message.seq != null && $Object.hasOwnProperty.call(message, "seq") && message.seq !== 0)
                            writer.uint32(8).uint32(message.seq);
                        if (message.segmentIndex != null && $Object.hasOwnProperty.call(message, "segmentIndex") && message.segmentIndex !== 0)
                            writer.uint32(16).uint32(message.segmentIndex);
                        if (message.segmentCount != null && $Object.hasOwnProperty.call(message, "segmentCount") && message.segmentCount !== 0)
                            writer.uint32(24).uint32(message.segmentCount);
                        if (message.payload != null && $Object.hasOwnProperty.call(message, "payload") && message.payload.length)
                            writer.uint32(34).bytes(message.payload);
                        if (message.$unknowns != null && $Object.hasOwnProperty.call(message, "$unknowns"))
                            for (let i = 0; i < message.$unknowns.length; ++i)
                                writer.raw(message.$unknowns[i]);
                        return writer;
                    };

                    RelayData.decode = function (reader, length, _end, _depth, _target) {
                        if (!(reader instanceof $Reader))
                            reader = $Reader.create(reader);
                        if (_depth === $undefined)
                            _depth = 0;
                        if (_depth > $Reader.recursionLimit)
                            throw $Error("max depth exceeded");
                        let end, message, value;
                        if (length === $undefined)
                            end = reader.len;
                        else {
                            end = reader.pos + length;
                            if (end > reader.len)
                                throw $RangeError("index out of range");
                            length = reader.len;
                            reader.len = end;
                        }
                        message = _target || new $root.codex.exec_server.relay.v1.RelayData();
                        while (reader.pos < end) {
                            let start = reader.pos;
                            let tag = reader.tag();
                            if (tag === _end) {
                                _end = $undefined;
                                break;
                            }
                            let wireType = tag & 7;
                            switch (tag >>>= 3) {
                            case 1: {
                                    if (wireType !== 0)
                                        break;
                                    if (value = reader.uint32())
                                        message.seq = value;
                                    else
                                        delete message.seq;
                                    continue;
                                }
                            case 2: {
                                    if (wireType !== 0)
                                        break;
                                    if (value = reader.uint32())
                                        message.segmentIndex = value;
                                    else
                                        delete message.segmentIndex;
                                    continue;
                                }
                            case 3: {
                                    if (wireType !== 0)
                                        break;
                                    if (value = reader.uint32())
                                        message.segmentCount = value;
                                    else
                                        delete message.segmentCount;
                                    continue;
                                }
                            case 4: {
                                    if (wireType !== 2)
                                        break;
                                    if ((value = reader.bytes()).length)
                                        message.payload = value;
                                    else
                                        delete message.payload;
                                    continue;
                                }
                            }
                            reader.skipType(wireType, _depth, tag);
                            if (!reader.discardUnknown) {
                                $util.makeProp(message, "$unknowns", false);
                                (message.$unknowns || (message.$unknowns = [])).push(reader.raw(start, reader.pos));
                            }
                        }
                        if (length !== $undefined) {
                            if (reader.pos !== end)
                                throw $RangeError("index out of range");
                            reader.len = length;
                        }
                        if (_end !== $undefined)
                            throw $Error("missing end group");
                        return message;
                    };

                    RelayData.getTypeUrl = function(prefix) {
                        if (prefix === $undefined)
                            prefix = "type.googleapis.com";
                        return prefix + "/codex.exec_server.relay.v1.RelayData";
                    };

                    return RelayData;
                })();

                v1.RelayAck = (function() {

                    const RelayAck = function (properties) {
                        if (properties)
                            for (let keys = $Object.keys(properties), i = 0; i < keys.length; ++i)
                                if (properties[keys[i]] != null && keys[i] !== "__proto__")
                                    this[keys[i]] = properties[keys[i]];
                    };

                    RelayAck.encode = function (message, writer, _depth) {
                        if (!writer)
                            writer = $Writer.create();
                        if (_depth === $undefined)
                            _depth = 0;
                        if (_depth > $util.recursionLimit)
                            throw $Error("max depth exceeded");
                        if (message.$unknowns != null && $Object.hasOwnProperty.call(message, "$unknowns"))
                            for (let i = 0; i < message.$unknowns.length; ++i)
                                writer.raw(message.$unknowns[i]);
                        return writer;
                    };

                    RelayAck.decode = function (reader, length, _end, _depth, _target) {
                        if (!(reader instanceof $Reader))
                            reader = $Reader.create(reader);
                        if (_depth === $undefined)
                            _depth = 0;
                        if (_depth > $Reader.recursionLimit)
                            throw $Error("max depth exceeded");
                        let end, message;
                        if (length === $undefined)
                            end = reader.len;
                        else {
                            end = reader.pos + length;
                            if (end > reader.len)
                                throw $RangeError("index out of range");
                            length = reader.len;
                            reader.len = end;
                        }
                        message = _target || new $root.codex.exec_server.relay.v1.RelayAck();
                        while (reader.pos < end) {
                            let start = reader.pos;
                            let tag = reader.tag();
                            if (tag === _end) {
                                _end = $undefined;
                                break;
                            }
                            reader.skipType(tag & 7, _depth, tag);
                            if (!reader.discardUnknown) {
                                $util.makeProp(message, "$unknowns", false);
                                (message.$unknowns || (message.$unknowns = [])).push(reader.raw(start, reader.pos));
                            }
                        }
                        if (length !== $undefined) {
                            if (reader.pos !== end)
                                throw $RangeError("index out of range");
                            reader.len = length;
                        }
                        if (_end !== $undefined)
                            throw $Error("missing end group");
                        return message;
                    };

                    RelayAck.getTypeUrl = function(prefix) {
                        if (prefix === $undefined)
                            prefix = "type.googleapis.com";
                        return prefix + "/codex.exec_server.relay.v1.RelayAck";
                    };

                    return RelayAck;
                })();

                v1.RelayResume = (function() {

                    const RelayResume = function (properties) {
                        if (properties)
                            for (let keys = $Object.keys(properties), i = 0; i < keys.length; ++i)
                                if (properties[keys[i]] != null && keys[i] !== "__proto__")
                                    this[keys[i]] = properties[keys[i]];
                    };

                    RelayResume.prototype.nextSeq = 0;

                    RelayResume.encode = function (message, writer, _depth) {
                        if (!writer)
                            writer = $Writer.create();
                        if (_depth === $undefined)
                            _depth = 0;
                        if (_depth > $util.recursionLimit)
                            throw $Error("max depth exceeded");
                        if (message.nextSeq != null && $Object.hasOwnProperty.call(message, "nextSeq") && message.nextSeq !== 0)
                            writer.uint32(8).uint32(message.nextSeq);
                        if (message.$unknowns != null && $Object.hasOwnProperty.call(message, "$unknowns"))
                            for (let i = 0; i < message.$unknowns.length; ++i)
                                writer.raw(message.$unknowns[i]);
                        return writer;
                    };

                    RelayResume.decode = function (reader, length, _end, _depth, _target) {
                        if (!(reader instanceof $Reader))
                            reader = $Reader.create(reader);
                        if (_depth === $undefined)
                            _depth = 0;
                        if (_depth > $Reader.recursionLimit)
                            throw $Error("max depth exceeded");
                        let end, message, value;
                        if (length === $undefined)
                            end = reader.len;
                        else {
                            end = reader.pos + length;
                            if (end > reader.len)
                                throw $RangeError("index out of range");
                            length = reader.len;
                            reader.len = end;
                        }
                        message = _target || new $root.codex.exec_server.relay.v1.RelayResume();
                        while (reader.pos < end) {
                            let start = reader.pos;
                            let tag = reader.tag();
                            if (tag === _end) {
                                _end = $undefined;
                                break;
                            }
                            let wireType = tag & 7;
                            switch (tag >>>= 3) {
                            case 1: {
                                    if (wireType !== 0)
                                        break;
                                    if (value = reader.uint32())
                                        message.nextSeq = value;
                                    else
                                        delete message.nextSeq;
                                    continue;
                                }
                            }
                            reader.skipType(wireType, _depth, tag);
                            if (!reader.discardUnknown) {
                                $util.makeProp(message, "$unknowns", false);
                                (message.$unknowns || (message.$unknowns = [])).push(reader.raw(start, reader.pos));
                            }
                        }
                        if (length !== $undefined) {
                            if (reader.pos !== end)
                                throw $RangeError("index out of range");
                            reader.len = length;
                        }
                        if (_end !== $undefined)
                            throw $Error("missing end group");
                        return message;
                    };

                    RelayResume.getTypeUrl = function(prefix) {
                        if (prefix === $undefined)
                            prefix = "type.googleapis.com";
                        return prefix + "/codex.exec_server.relay.v1.RelayResume";
                    };

                    return RelayResume;
                })();

                v1.RelayReset = (function() {

                    const RelayReset = function (properties) {
                        if (properties)
                            for (let keys = $Object.keys(properties), i = 0; i < keys.length; ++i)
                                if (properties[keys[i]] != null && keys[i] !== "__proto__")
                                    this[keys[i]] = properties[keys[i]];
                    };

                    RelayReset.prototype.reason = "";

                    RelayReset.encode = function (message, writer, _depth) {
                        if (!writer)
                            writer = $Writer.create();
                        if (_depth === $undefined)
                            _depth = 0;
                        if (_depth > $util.recursionLimit)
                            throw $Error("max depth exceeded");
                        if (message.reason != null && $Object.hasOwnProperty.call(message, "reason") && message.reason !== "")
                            writer.uint32(10).string(message.reason);
                        if (message.$unknowns != null && $Object.hasOwnProperty.call(message, "$unknowns"))
                            for (let i = 0; i < message.$unknowns.length; ++i)
                                writer.raw(message.$unknowns[i]);
                        return writer;
                    };

                    RelayReset.decode = function (reader, length, _end, _depth, _target) {
                        if (!(reader instanceof $Reader))
                            reader = $Reader.create(reader);
                        if (_depth === $undefined)
                            _depth = 0;
                        if (_depth > $Reader.recursionLimit)
                            throw $Error("max depth exceeded");
                        let end, message, value;
                        if (length === $undefined)
                            end = reader.len;
                        else {
                            end = reader.pos + length;
                            if (end > reader.len)
                                throw $RangeError("index out of range");
                            length = reader.len;
                            reader.len = end;
                        }
                        message = _target || new $root.codex.exec_server.relay.v1.RelayReset();
                        while (reader.pos < end) {
                            let start = reader.pos;
                            let tag = reader.tag();
                            if (tag === _end) {
                                _end = $undefined;
                                break;
                            }
                            let wireType = tag & 7;
                            switch (tag >>>= 3) {
                            case 1: {
                                    if (wireType !== 2)
                                        break;
                                    if ((value = reader.stringVerify()).length)
                                        message.reason = value;
                                    else
                                        delete message.reason;
                                    continue;
                                }
                            }
                            reader.skipType(wireType, _depth, tag);
                            if (!reader.discardUnknown) {
                                $util.makeProp(message, "$unknowns", false);
                                (message.$unknowns || (message.$unknowns = [])).push(reader.raw(start, reader.pos));
                            }
                        }
                        if (length !== $undefined) {
                            if (reader.pos !== end)
                                throw $RangeError("index out of range");
                            reader.len = length;
                        }
                        if (_end !== $undefined)
                            throw $Error("missing end group");
                        return message;
                    };

                    RelayReset.getTypeUrl = function(prefix) {
                        if (prefix === $undefined)
                            prefix = "type.googleapis.com";
                        return prefix + "/codex.exec_server.relay.v1.RelayReset";
                    };

                    return RelayReset;
                })();

                v1.RelayHeartbeat = (function() {

                    const RelayHeartbeat = function (properties) {
                        if (properties)
                            for (let keys = $Object.keys(properties), i = 0; i < keys.length; ++i)
                                if (properties[keys[i]] != null && keys[i] !== "__proto__")
                                    this[keys[i]] = properties[keys[i]];
                    };

                    RelayHeartbeat.encode = function (message, writer, _depth) {
                        if (!writer)
                            writer = $Writer.create();
                        if (_depth === $undefined)
                            _depth = 0;
                        if (_depth > $util.recursionLimit)
                            throw $Error("max depth exceeded");
                        if (message.$unknowns != null && $Object.hasOwnProperty.call(message, "$unknowns"))
                            for (let i = 0; i < message.$unknowns.length; ++i)
                                writer.raw(message.$unknowns[i]);
                        return writer;
                    };

                    RelayHeartbeat.decode = function (reader, length, _end, _depth, _target) {
                        if (!(reader instanceof $Reader))
                            reader = $Reader.create(reader);
                        if (_depth === $undefined)
                            _depth = 0;
                        if (_depth > $Reader.recursionLimit)
                            throw $Error("max depth exceeded");
                        let end, message;
                        if (length === $undefined)
                            end = reader.len;
                        else {
                            end = reader.pos + length;
                            if (end > reader.len)
                                throw $RangeError("index out of range");
                            length = reader.len;
                            reader.len = end;
                        }
                        message = _target || new $root.codex.exec_server.relay.v1.RelayHeartbeat();
                        while (reader.pos < end) {
                            let start = reader.pos;
                            let tag = reader.tag();
                            if (tag === _end) {
                                _end = $undefined;
                                break;
                            }
                            reader.skipType(tag & 7, _depth, tag);
                            if (!reader.discardUnknown) {
                                $util.makeProp(message, "$unknowns", false);
                                (message.$unknowns || (message.$unknowns = [])).push(reader.raw(start, reader.pos));
                            }
                        }
                        if (length !== $undefined) {
                            if (reader.pos !== end)
                                throw $RangeError("index out of range");
                            reader.len = length;
                        }
                        if (_end !== $undefined)
                            throw $Error("missing end group");
                        return message;
                    };

                    RelayHeartbeat.getTypeUrl = function(prefix) {
                        if (prefix === $undefined)
                            prefix = "type.googleapis.com";
                        return prefix + "/codex.exec_server.relay.v1.RelayHeartbeat";
                    };

                    return RelayHeartbeat;
                })();

                v1.RelayHandshake = (function() {

                    const RelayHandshake = function (properties) {
                        if (properties)
                            for (let keys = $Object.keys(properties), i = 0; i < keys.length; ++i)
                                if (properties[keys[i]] != null && keys[i] !== "__proto__")
                                    this[keys[i]] = properties[keys[i]];
                    };

                    RelayHandshake.prototype.payload = $util.newBuffer([]);

                    RelayHandshake.encode = function (message, writer, _depth) {
                        if (!writer)
                            writer = $Writer.create();
                        if (_depth === $undefined)
                            _depth = 0;
                        if (_depth > $util.recursionLimit)
                            throw $Error("max depth exceeded");
                        if (message.payload != null && $Object.hasOwnProperty.call(message, "payload") && message.payload.length)
                            writer.uint32(10).bytes(message.payload);
                        if (message.$unknowns != null && $Object.hasOwnProperty.call(message, "$unknowns"))
                            for (let i = 0; i < message.$unknowns.length; ++i)
                                writer.raw(message.$unknowns[i]);
                        return writer;
                    };

                    RelayHandshake.decode = function (reader, length, _end, _depth, _target) {
                        if (!(reader instanceof $Reader))
                            reader = $Reader.create(reader);
                        if (_depth === $undefined)
                            _depth = 0;
                        if (_depth > $Reader.recursionLimit)
                            throw $Error("max depth exceeded");
                        let end, message, value;
                        if (length === $undefined)
                            end = reader.len;
                        else {
                            end = reader.pos + length;
                            if (end > reader.len)
                                throw $RangeError("index out of range");
                            length = reader.len;
                            reader.len = end;
                        }
                        message = _target || new $root.codex.exec_server.relay.v1.RelayHandshake();
                        while (reader.pos < end) {
                            let start = reader.pos;
                            let tag = reader.tag();
                            if (tag === _end) {
                                _end = $undefined;
                                break;
                            }
                            let wireType = tag & 7;
                            switch (tag >>>= 3) {
                            case 1: {
                                    if (wireType !== 2)
                                        break;
                                    if ((value = reader.bytes()).length)
                                        message.payload = value;
                                    else
                                        delete message.payload;
                                    continue;
                                }
                            }
                            reader.skipType(wireType, _depth, tag);
                            if (!reader.discardUnknown) {
                                $util.makeProp(message, "$unknowns", false);
                                (message.$unknowns || (message.$unknowns = [])).push(reader.raw(start, reader.pos));
                            }
                        }
                        if (length !== $undefined) {
                            if (reader.pos !== end)
                                throw $RangeError("index out of range");
                            reader.len = length;
                        }
                        if (_end !== $undefined)
                            throw $Error("missing end group");
                        return message;
                    };

                    RelayHandshake.getTypeUrl = function(prefix) {
                        if (prefix === $undefined)
                            prefix = "type.googleapis.com";
                        return prefix + "/codex.exec_server.relay.v1.RelayHandshake";
                    };

                    return RelayHandshake;
                })();

                return v1;
            })();

            return relay;
        })();

        return exec_server;
    })();

    return codex;
})();

export {
  $root as default
};
