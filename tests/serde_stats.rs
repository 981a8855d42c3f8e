//! With the `serde` feature, the stats snapshot and the shutdown report serialize.
#![cfg(feature = "serde")]

use crier::{Bus, Envelope, Overflow};

#[test]
fn stats_and_shutdown_report_serialize_to_json() {
    let bus = Bus::builder().inline().build().unwrap();
    let _sub = bus
        .subscriber::<u8>()
        .name("counter")
        .subscribe(|_: &Envelope<u8>| {})
        .unwrap();
    let _rx = bus
        .subscriber::<u8>()
        .name("lossy")
        .capacity(1)
        .overflow(Overflow::DropNewest)
        .receiver()
        .unwrap();
    bus.publish(1_u8).unwrap();
    bus.publish(2_u8).unwrap();

    let json = serde_json::to_value(bus.stats()).unwrap();
    assert_eq!(json["topics"][0]["name"], "u8");
    assert_eq!(json["topics"][0]["published"], 2);
    assert_eq!(json["subscribers"][0]["name"], "counter");
    assert_eq!(json["subscribers"][0]["delivered"], 2);
    assert_eq!(
        json["subscribers"][0]["consumer"],
        serde_json::json!({ "Handler": "Inline" })
    );
    assert_eq!(json["subscribers"][1]["dropped"]["newest"], 1);
    assert_eq!(json["subscribers"][1]["overflow"], "DropNewest");

    let report = bus.shutdown(std::time::Duration::from_secs(5)).unwrap();
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["drained"], true);
    assert_eq!(json["in_receivers"], 1);
}
