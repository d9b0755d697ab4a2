//! The quick-start demo: one identity hammers a "5/second AND 20/minute" limiter; every decision
//! is printed. Embedded store by default; Redis when FLOODWALL_REDIS_URL is set.

use std::time::Duration;

use floodwall::{Algorithm, Limiter, LimiterConfig};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let redis_url = std::env::var("FLOODWALL_REDIS_URL").ok().filter(|u| !u.is_empty());
    let where_ = redis_url
        .clone()
        .map(|u| floodwall::store::redis::redact_url(&u))
        .unwrap_or_else(|| "the embedded store".into());
    for algorithm in [Algorithm::SlidingWindow, Algorithm::SlidingLog, Algorithm::TokenBucket] {
        let mut config = LimiterConfig::new(floodwall::parse_limits(&["5/second", "20/minute"])?);
        config.algorithm = algorithm;
        config.redis_url = redis_url.clone();
        config.prefix = "floodwall-demo".into();
        let limiter = Limiter::from_config(&config)?;
        let key = format!("demo-user-{}", std::process::id());
        println!(
            "\n{algorithm} on {where_}: 5/second and 20/minute for {key:?}, 8 requests at once, then one per 150 ms"
        );
        println!("  #  allowed  limit  remaining  reset_after  retry_after  limited_by   source");
        for i in 1..=14 {
            let d = limiter.check(&key).await?;
            println!(
                "{i:>3}  {:<7}  {:>5}  {:>9}  {:>9.3}s  {:>10}  {:<11}  {}",
                d.allowed,
                d.limit,
                d.remaining,
                d.reset_after.as_secs_f64(),
                d.retry_after.map(|r| format!("{:.3}s", r.as_secs_f64())).unwrap_or_else(|| "-".into()),
                d.limited_by.map(|l| l.to_string()).unwrap_or_else(|| "-".into()),
                d.source.as_str(),
            );
            if i >= 8 {
                tokio::time::sleep(Duration::from_millis(150)).await;
            }
        }
        limiter.reset(&key).await?;
    }
    Ok(())
}
