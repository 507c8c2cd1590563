//! A motion axis (mount azimuth, dome azimuth, a shutter door): moves toward
//! its target with limited velocity and acceleration, so plots show the
//! ramps and slews an operator expects.

#[derive(Debug, Clone)]
pub struct Axis {
    pub position: f64,
    pub velocity: f64,
    pub acceleration: f64,
    pub target: f64,
    pub max_velocity: f64,
    pub max_acceleration: f64,
    pub tolerance: f64,
    /// Azimuths wrap at 360°: move the short way round.
    pub wraps: bool,
}

impl Axis {
    pub fn new(position: f64, max_velocity: f64, max_acceleration: f64, tolerance: f64) -> Axis {
        Axis {
            position,
            velocity: 0.0,
            acceleration: 0.0,
            target: position,
            max_velocity,
            max_acceleration,
            tolerance,
            wraps: false,
        }
    }

    fn error(&self) -> f64 {
        let e = self.target - self.position;
        if self.wraps {
            (e + 540.0).rem_euclid(360.0) - 180.0
        } else {
            e
        }
    }

    pub fn in_position(&self) -> bool {
        self.error().abs() <= self.tolerance && self.velocity.abs() < self.max_velocity * 0.01
    }

    /// Stops where it is.
    pub fn stop(&mut self) {
        self.target = self.position;
        self.velocity = 0.0;
        self.acceleration = 0.0;
    }

    /// Advances `dt` seconds: accelerate toward the target, brake in time.
    pub fn step(&mut self, dt: f64) {
        let e = self.error();
        if e.abs() <= self.tolerance && self.velocity.abs() < self.max_velocity * 0.01 {
            self.position += e;
            self.velocity = 0.0;
            self.acceleration = 0.0;
            return;
        }
        // The velocity that still stops at the target: v² = 2·a·d.
        let braking = (2.0 * self.max_acceleration * e.abs()).sqrt();
        let wanted = e.signum() * braking.min(self.max_velocity);
        let dv = (wanted - self.velocity).clamp(-self.max_acceleration * dt, self.max_acceleration * dt);
        self.acceleration = dv / dt;
        self.velocity += dv;
        let mut step = self.velocity * dt;
        if step.abs() > e.abs() && step.signum() == e.signum() {
            step = e;
            self.velocity = 0.0;
        }
        self.position += step;
        if self.wraps {
            self.position = self.position.rem_euclid(360.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_axis_reaches_its_target_without_exceeding_its_limits() {
        let mut a = Axis::new(0.0, 10.0, 5.0, 0.001);
        a.target = 90.0;
        let mut t = 0.0;
        while !a.in_position() {
            a.step(0.02);
            assert!(a.velocity.abs() <= 10.0 + 1e-9);
            t += 0.02;
            assert!(t < 60.0, "never arrived: {a:?}");
        }
        assert!((a.position - 90.0).abs() <= 0.001);
        // 90° at 10°/s with 2 s ramps: about 11 s.
        assert!((10.0..13.0).contains(&t), "{t}");
    }

    #[test]
    fn a_wrapping_axis_goes_the_short_way() {
        let mut a = Axis::new(350.0, 5.0, 5.0, 0.01);
        a.wraps = true;
        a.target = 10.0;
        for _ in 0..1000 {
            a.step(0.02);
        }
        assert!(a.in_position(), "{a:?}");
        assert!((a.position - 10.0).abs() < 0.02);
    }
}
